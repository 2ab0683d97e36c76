"""The ``studio sweep ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser.

    studio sweep submit FILE.yaml [--dry-run]
    studio sweep list [--json]
    studio sweep show ID [--metric M] [--mode min|max] [--json]
    studio sweep cancel ID

``FILE.yaml`` is a sweep (``studio.jobs.sweeps.SweepSpec``; ``configs/sweeps/`` has an example). ``--dry-run``
prints the trials it would queue and queues nothing. ``ID`` is a sweep id, a unique prefix of it, or a sweep's name.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studio.db.engine import Database
from studio.jobs import sweeps
from studio.settings import Settings


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _database(settings: Settings) -> Database:
    settings.ensure_dirs()
    return Database(settings.db_url)


def cmd_sweep_submit(args: argparse.Namespace) -> int:
    """``studio sweep submit FILE.yaml [--dry-run]``: queue the sweep's jobs (or only check and show them); prints
    its id."""
    spec = sweeps.load_spec(Path(args.file))
    settings = Settings()
    db = _database(settings)
    try:
        if args.dry_run:
            _sweep, jobs = sweeps.plan_sweep(db, settings, spec)
        else:
            sweep = sweeps.submit_sweep(db, settings, spec)
            count = len(sweeps.sweep_status(db, sweep.id).runs)
    finally:
        db.dispose()
    if args.dry_run:
        rows = [("TRIAL", "NAME", *spec.parameters)]
        for i, job in enumerate(jobs, start=1):
            rows.append((str(i), job.name, *(str(sweeps.get_path(job.config, p)) for p in spec.parameters)))
        _table(rows)
        print(f"dry run: {len(jobs)} {spec.method} job(s) checked; nothing was queued")
        return 0
    print(sweep.id)
    print(f"sweep {sweep.name}: {count} job(s) queued ({sweep.method}); `studio sweep show {sweep.id[:8]}` follows it")
    return 0


def cmd_sweep_list(args: argparse.Namespace) -> int:
    """``studio sweep list``: sweeps newest first."""
    db = _database(Settings())
    try:
        views = sweeps.list_sweeps(db)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps([_summary(v) for v in views], indent=2))
        return 0
    if not views:
        print("No sweeps.")
        return 0
    rows = [("ID", "NAME", "METHOD", "STATE", "JOBS", "BEST", "CREATED")]
    for v in views:
        best = v.best
        shown = f"{v.metric}={best.value:.4g} ({best.job.name})" if best and best.value is not None else "-"
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(v.counts.items())) or "-"
        created = v.sweep.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append((v.sweep.id, v.sweep.name, v.sweep.method, v.state, jobs, shown, created))
    _table(rows)
    return 0


def _summary(view: sweeps.SweepView) -> dict[str, Any]:
    data = view.to_dict()
    for key in ("runs", "curves", "spec"):
        data.pop(key)
    return data


def cmd_sweep_show(args: argparse.Namespace) -> int:
    """``studio sweep show ID``: the runs ranked by the metric, with the values they tried."""
    db = _database(Settings())
    try:
        view = sweeps.sweep_status(db, args.id, metric=args.metric, mode=args.mode)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(view.to_dict(), indent=2))
        return 0
    print(f"sweep {view.sweep.name} ({view.sweep.id}), {view.sweep.method}, ranked by {view.metric} ({view.mode})")
    print(view.describe())
    headers, rows = view.table()
    _table([tuple(headers), *(tuple("-" if c in ("", None) else str(c) for c in row) for row in rows)])
    return 0


def cmd_sweep_cancel(args: argparse.Namespace) -> int:
    """``studio sweep cancel ID``: cancel the queued jobs, stop the running ones at their next step."""
    db = _database(Settings())
    try:
        view = sweeps.cancel_sweep(db, args.id)
    finally:
        db.dispose()
    print(f"sweep {view.sweep.name}: {view.sweep.message}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``sweep`` to a parser's subcommands (``studio.cli.build_parser`` calls this)."""
    sweep = subparsers.add_parser("sweep", help="grid and random searches over a job config, run as queued jobs")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)
    ss = ssub.add_parser("submit", help="queue a sweep from a YAML file (configs/sweeps/ has an example)")
    ss.add_argument("file", help="sweep YAML: name, base (a job config), method, parameters, budget, metric")
    ss.add_argument("--dry-run", action="store_true", help="print the trials it would queue; queue nothing")
    ss.set_defaults(func=cmd_sweep_submit)
    sl = ssub.add_parser("list", help="sweeps, newest first, with their state and best run")
    sl.add_argument("--json", action="store_true", help="machine-readable output")
    sl.set_defaults(func=cmd_sweep_list)
    ssh = ssub.add_parser("show", help="a sweep's runs ranked by its metric, with the values each tried")
    ssh.add_argument("id", help="sweep id, a unique prefix of 4+ characters, or its name")
    ssh.add_argument("--metric", help="rank by this metric instead of the sweep's")
    ssh.add_argument("--mode", choices=("min", "max"), help="min: lowest first; max: highest first")
    ssh.add_argument("--json", action="store_true", help="machine-readable output (with every run's curve)")
    ssh.set_defaults(func=cmd_sweep_show)
    sc = ssub.add_parser("cancel", help="cancel a sweep's queued jobs and stop its running ones")
    sc.add_argument("id")
    sc.set_defaults(func=cmd_sweep_cancel)
