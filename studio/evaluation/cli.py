"""The ``studio eval ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser.

    studio eval run CONFIG.yaml [--wait] [--name NAME]   prints the run id (queued for the worker)
    studio eval show ID [--json] [--examples N]          the metric × model table (and the worst examples)
    studio eval list [--json]                            eval runs, newest first
    studio eval plugins [--json]                         loaded metric plugins (and load errors)
    studio eval compare ID [ID ...] [--json]             metric table and config diff of runs

``--wait`` waits for the run to end; when no worker picks it up within a few seconds it runs queued jobs in this
process (through the same job process a worker starts), so it also works without ``studio serve``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studio.db.engine import Database
from studio.errors import ValidationError
from studio.jobs import queue
from studio.settings import Settings

WAIT_FOR_WORKER_S = 3.0


def _database(settings: Settings) -> Database:
    settings.ensure_dirs()
    return Database(settings.db_url)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def wait_for_run(settings: Settings, db: Database, job_id: str, poll_s: float = 1.0) -> str:
    """Block until run ``job_id`` ends; if nobody claims it, run queued jobs here. Returns the final state."""
    from studio.jobs.worker import Worker

    waited = 0.0
    last = ""
    while True:
        job = queue.get_job(db, job_id)
        if job.state in queue.FINAL_STATES:
            return job.state
        line = f"{job.state} {job.progress * 100:.0f}% {job.message}"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if job.state == queue.QUEUED and waited >= WAIT_FOR_WORKER_S:
            Worker(settings, db).run_once()
            continue
        time.sleep(poll_s)
        waited += poll_s


def read_eval_file(path: Path) -> dict[str, Any]:
    """The fields of an eval YAML file (``kind:`` may be left out, or must say ``eval``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"{path}: no such file", param="config") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"{path}: cannot read it as YAML ({exc})", param="config") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: an eval config must be a YAML mapping of fields", param="config")
    kind = data.pop("kind", "eval")
    if kind != "eval":
        raise ValidationError(f"{path}: kind must be 'eval' (or left out); got {kind!r}", param="kind")
    return data


def cmd_eval_run(args: argparse.Namespace) -> int:
    """``studio eval run CONFIG.yaml``: queue the run and print its id (``--wait``: and see it to its end)."""
    from studio.evaluation.results import get_results, submit_eval

    path = Path(args.config)
    config = read_eval_file(path)
    settings = Settings()
    db = _database(settings)
    try:
        if not config.get("name") and not args.name:
            config["name"] = path.stem
        job = submit_eval(settings, db, config, name=args.name or "")
        print(job.id, flush=True)
        if not args.wait:
            return 0
        state = wait_for_run(settings, db, job.id)
        results = get_results(db, job.id)
        headers, rows = results.table()
        _table(headers, rows)
        return 0 if state == queue.SUCCEEDED else 1
    finally:
        db.dispose()


def cmd_eval_show(args: argparse.Namespace) -> int:
    """``studio eval show ID``: the run's state and metric × model table (``--json``: everything)."""
    from studio.evaluation.results import EXAMPLE_COLUMNS, example_rows, get_results

    db = _database(Settings())
    try:
        results = get_results(db, args.id)
        examples = example_rows(db, results.job.id, limit=args.examples) if args.examples else []
    finally:
        db.dispose()
    if args.json:
        data = results.to_dict()
        if examples:
            data["worst_examples"] = [dict(zip(EXAMPLE_COLUMNS, r, strict=True)) for r in examples]
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{results.job.id}  {results.job.name}  [{results.job.state}] {results.job.message}")
    headers, rows = results.table()
    _table(headers, rows)
    for metric, reason in results.unavailable.items():
        print(f"unavailable: {metric}: {reason}")
    for err in results.metric_errors:
        print(f"metric {err['metric']} raised on {err['count']} example(s); first:\n{err['traceback']}")
    if examples:
        print()
        _table(EXAMPLE_COLUMNS, [[str(c)[:60] for c in r] for r in examples])
    return 0


def cmd_eval_list(args: argparse.Namespace) -> int:
    """``studio eval list``: eval runs newest first."""
    from studio.evaluation.results import list_eval_runs, run_rows

    db = _database(Settings())
    try:
        jobs = list_eval_runs(db)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
        return 0
    _table(("ID", "NAME", "STATE", "PROGRESS", "CREATED", "MESSAGE"), run_rows(jobs))
    return 0


def cmd_eval_plugins(args: argparse.Namespace) -> int:
    """``studio eval plugins``: the metrics available (built-in and plugins) and plugin load errors."""
    from studio.evaluation.plugins import load_registry, plugin_rows

    registry = load_registry(Settings())
    if args.json:
        print(
            json.dumps(
                {
                    "metrics": [
                        {"name": s.name, "source": s.source, "description": s.description} for s in registry.specs()
                    ],
                    "plugins": [p.to_dict() for p in registry.plugins],
                },
                indent=2,
            )
        )
        return 0
    _table(("METRIC", "SOURCE", "DESCRIPTION"), [[s.name, s.source, s.description] for s in registry.specs()])
    if registry.plugins:
        print()
        _table(("PLUGIN", "KIND", "METRICS / STATUS", "DESCRIPTION", "SOURCE"), plugin_rows(registry.plugins))
    return 0


def cmd_eval_compare(args: argparse.Namespace) -> int:
    """``studio eval compare ID ...``: the metric table and config diff of training/eval runs."""
    from studio.evaluation.experiments import compare

    db = _database(Settings())
    try:
        comparison = compare(db, args.ids)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2, default=str))
        return 0
    _table(comparison.metric_headers, comparison.metric_rows)
    print()
    _table(
        comparison.diff_headers,
        comparison.diff_rows or [["(configs are identical)"] + [""] * (len(comparison.diff_headers) - 1)],
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``studio eval run|show|list|plugins|compare`` to the ``studio`` parser."""
    ev = subparsers.add_parser("eval", help="evaluation runs, metrics and plugins, experiment comparison")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    run = esub.add_parser("run", help="queue an eval run from a YAML config and print its id")
    run.add_argument("config", help="eval YAML file (see configs/eval/examples/)")
    run.add_argument("--wait", action="store_true", help="wait for the run (run it here if no worker takes it)")
    run.add_argument("--name", help="run name (default: the config's name or file name)")
    run.set_defaults(func=cmd_eval_run)
    show = esub.add_parser("show", help="an eval run's results")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--examples", type=int, default=0, help="also list the N worst examples")
    show.set_defaults(func=cmd_eval_show)
    lst = esub.add_parser("list", help="eval runs, newest first")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_eval_list)
    plugins = esub.add_parser("plugins", help="metrics and metric plugins (STUDIO_HOME/plugins, entry points)")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_eval_plugins)
    cmp_ = esub.add_parser("compare", help="compare training and eval runs: metric table and config diff")
    cmp_.add_argument("ids", nargs="+")
    cmp_.add_argument("--json", action="store_true")
    cmp_.set_defaults(func=cmd_eval_compare)
