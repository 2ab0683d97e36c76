"""The ``studio worker`` and ``studio jobs ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser;
``python -m studio.jobs.cli`` runs them on their own (the server starts its worker that way).

    studio worker [--once] [--poll S] [--device D]
    studio jobs submit CONFIG.yaml [--priority N] [--not-before ISO] [--name NAME] [--device D]
    studio jobs list [--state S] [--kind K] [--limit N] [--json]
    studio jobs show ID [--json]
    studio jobs cancel ID
    studio jobs resume ID
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from studio.db.engine import Database
from studio.db.tables import Job
from studio.errors import StudioError, ValidationError
from studio.jobs import queue
from studio.jobs.kinds import get_kind
from studio.settings import Settings

DEFAULT_KIND = "finetune"


def _database(settings: Settings) -> Database:
    settings.ensure_dirs()
    return Database(settings.db_url)


def job_as_dict(job: Job) -> dict[str, Any]:
    """A job row as JSON-able data (what ``--json`` prints)."""
    return job.model_dump(mode="json")


def parse_not_before(raw: str) -> datetime:
    """An ISO date/time for ``--not-before``; without an offset it is local time."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"--not-before must be an ISO date/time such as 2026-11-22T03:00 or 2026-11-22T03:00+01:00; got {raw!r}",
            param="not_before",
        ) from None
    return moment.astimezone() if moment.tzinfo is None else moment


def read_job_file(path: Path) -> tuple[str, dict[str, Any]]:
    """``(kind, config)`` from a job YAML file: its ``kind:`` (default finetune) and the rest."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"{path}: no such file", param="config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read it ({exc})", param="config") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationError(f"{path}: not valid YAML{where}: {problem}", param="config") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: a job config must be a YAML mapping of fields", param="config")
    kind = data.pop("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise ValidationError(f"{path}: kind must be a string; got {kind!r}", param="kind")
    return kind, data


def _progress_text(job: Job) -> str:
    if job.total_steps:
        return f"{job.progress * 100:.0f}% {job.step}/{job.total_steps}"
    return f"step {job.step}" if job.step else "-"


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_worker(args: argparse.Namespace) -> int:
    """``studio worker``: run queued jobs of one device until stopped."""
    from studio.jobs.worker import WorkerOptions, run_worker_forever

    if args.poll <= 0:
        raise ValidationError(f"--poll must be a positive number of seconds; got {args.poll}", param="poll")
    return run_worker_forever(Settings(), once=args.once, options=WorkerOptions(poll_s=args.poll, device=args.device))


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    """``studio jobs submit CONFIG.yaml``: queue a job and print its id."""
    path = Path(args.config)
    kind, config = read_job_file(path)
    not_before = parse_not_before(args.not_before) if args.not_before else None
    settings = Settings()
    db = _database(settings)
    try:
        job = queue.submit(
            db,
            kind,
            config,
            name=args.name or ("" if "name" in get_kind(kind).config_model.model_fields else path.stem),
            priority=args.priority,
            not_before=not_before,
            device=args.device,
            settings=settings,
        )
    finally:
        db.dispose()
    print(job.id)
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    """``studio jobs list``: jobs newest first."""
    db = _database(Settings())
    try:
        jobs = queue.list_jobs(db, state=args.state, kind=args.kind, limit=args.limit)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps([job_as_dict(j) for j in jobs], indent=2))
        return 0
    if not jobs:
        print("No jobs." if args.state is None else f"No {args.state} jobs.")
        return 0
    rows = [("ID", "KIND", "NAME", "STATE", "PROGRESS", "CREATED", "MESSAGE")]
    for j in jobs:
        created = j.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        message = j.message if len(j.message) <= 60 else j.message[:57] + "..."
        rows.append((j.id, j.kind, j.name or "-", j.state, _progress_text(j), created, message))
    _table(rows)
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    """``studio jobs show ID``: one job with its latest metrics and log tail."""
    settings = Settings()
    db = _database(settings)
    try:
        job = queue.get_job(db, args.id)
        points = queue.job_metrics(db, job.id)
    finally:
        db.dispose()
    tail = queue.log_tail(settings, job.id, n=args.lines)
    if args.json:
        data = job_as_dict(job)
        data["metrics"] = [{"step": p.step, "epoch": p.epoch, "values": p.values} for p in points]
        data["log_path"] = str(queue.log_path(settings, job.id))
        data["log_tail"] = tail
        print(json.dumps(data, indent=2))
        return 0
    latest: dict[str, Any] = {}
    for p in points:
        latest.update(p.values)
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in latest.items())
    fields = [
        ("id", job.id),
        ("name", job.name or "-"),
        ("kind", job.kind),
        ("state", job.state + (" (cancel requested)" if job.cancel_requested and job.state == "running" else "")),
        ("progress", _progress_text(job)),
        ("epoch", f"{job.epoch:.2f}" if job.epoch is not None else "-"),
        ("eta", f"{job.eta_s:.0f} s" if job.eta_s is not None and job.state == "running" else "-"),
        ("metrics", shown or "-"),
        ("message", job.message or "-"),
        ("priority", str(job.priority)),
        ("device", job.device),
        ("attempts", str(job.attempts)),
        ("created", job.created_at.astimezone().isoformat(timespec="seconds")),
        ("not before", job.not_before.astimezone().isoformat(timespec="seconds") if job.not_before else "-"),
        ("started", job.started_at.astimezone().isoformat(timespec="seconds") if job.started_at else "-"),
        ("finished", job.finished_at.astimezone().isoformat(timespec="seconds") if job.finished_at else "-"),
        ("checkpoint", job.checkpoint_path or "-"),
        ("artifact", job.artifact_path or "-"),
        ("log", str(queue.log_path(settings, job.id))),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key.ljust(width)}  {value}")
    if tail:
        print("\n" + tail)
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    """``studio jobs cancel ID``."""
    db = _database(Settings())
    try:
        job = queue.request_cancel(db, args.id)
    finally:
        db.dispose()
    if job.state == queue.CANCELLED:
        print(f"job {job.id} cancelled")
    else:
        print(f"job {job.id}: cancel requested; it stops at its next step and saves a checkpoint")
    return 0


def cmd_jobs_resume(args: argparse.Namespace) -> int:
    """``studio jobs resume ID``."""
    db = _database(Settings())
    try:
        job = queue.resume(db, args.id)
    finally:
        db.dispose()
    print(f"job {job.id}: {job.message}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``worker`` and ``jobs`` to a parser's subcommands (``studio.cli.build_parser`` calls this)."""
    worker = subparsers.add_parser("worker", help="run queued jobs (training, evaluation) until stopped")
    worker.add_argument("--once", action="store_true", help="run at most one job, then exit")
    worker.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between queue checks (1)")
    worker.add_argument("--device", default="cpu", help="the device slot whose jobs it runs (default cpu)")
    worker.set_defaults(func=cmd_worker)

    jobs = subparsers.add_parser("jobs", help="the job queue: submit, list, show, cancel, resume")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    js = jsub.add_parser("submit", help="queue a job from a YAML config (kind: finetune by default); prints its id")
    js.add_argument("config", help="job config YAML")
    js.add_argument("--priority", type=int, help="higher runs first (default: the config's priority, else 0)")
    js.add_argument("--not-before", metavar="ISO", help="do not start before this date/time (local unless +HH:MM)")
    js.add_argument("--name", help="a name to show (default: the config's name, else the file's name)")
    js.add_argument("--device", default="cpu", help="the device slot to run on (default cpu)")
    js.set_defaults(func=cmd_jobs_submit)
    jl = jsub.add_parser("list", help="jobs, newest first")
    jl.add_argument("--state", choices=queue.STATES)
    jl.add_argument("--kind")
    jl.add_argument("--limit", type=int, default=100)
    jl.add_argument("--json", action="store_true", help="machine-readable output")
    jl.set_defaults(func=cmd_jobs_list)
    jsh = jsub.add_parser("show", help="one job: state, progress, metrics, checkpoint, artifact, log tail")
    jsh.add_argument("id", help="job id (or a unique prefix of at least 4 characters)")
    jsh.add_argument("--json", action="store_true", help="machine-readable output")
    jsh.add_argument("--lines", type=int, default=10, help="log lines to show (default 10)")
    jsh.set_defaults(func=cmd_jobs_show)
    jc = jsub.add_parser("cancel", help="cancel a queued job, or stop a running one at its next step")
    jc.add_argument("id")
    jc.set_defaults(func=cmd_jobs_cancel)
    jr = jsub.add_parser("resume", help="queue an interrupted/cancelled/failed job again from its checkpoint")
    jr.add_argument("id")
    jr.set_defaults(func=cmd_jobs_resume)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m studio.jobs.cli worker|jobs ...`` (the same verbs as ``studio``)."""
    parser = argparse.ArgumentParser(prog="studio", description="Whetstone Studio jobs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
