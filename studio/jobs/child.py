"""The job's own process: ``python -m studio.jobs.child <job_id> <worker_id> <attempt>``.

A worker starts one per job, in a new process group, so that a crash, an out-of-memory kill or a hard cancel
of the job never takes the worker down and kills every process the job started. This process runs the kind's
``run(config, runtime)`` and writes the final state itself: ``succeeded``; ``cancelled`` or ``interrupted``
when it stopped early because it was asked to; ``failed`` with the exception's last line as the message and the
full traceback in the job's log. If it dies without writing one, its worker does (naming the exit code or
signal). It dies with its worker (Linux parent-death signal) and stops at the next step if the job's row no
longer carries its lease.

What it prints goes to ``runs/<job>/output.txt`` (the worker's redirect); the job's log (``log.txt``) gets the
lines the job writes through its runtime, and the studio's own warnings and errors, copied there by
:class:`JobLogHandler`. Third-party warnings and progress bars stay in the output file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

from studio.db.engine import Database
from studio.db.tables import Job
from studio.errors import StudioError
from studio.jobs import queue
from studio.jobs.kinds import get_kind
from studio.jobs.procs import die_with_parent
from studio.jobs.queue import Lease
from studio.jobs.runtime import JobRuntime
from studio.settings import Settings

log = logging.getLogger(__name__)


class JobLogHandler(logging.Handler):
    """Copies the studio's own warnings and errors (``studio.*`` loggers) into the job's log, where the user reads
    them; records of other libraries stay in the process's output file. Only records of the thread that runs the
    job (the job's process may be a test's, or a host's, with other threads logging)."""

    def __init__(self, runtime: JobRuntime, level: int = logging.WARNING) -> None:
        super().__init__(level=level)
        self.runtime = runtime
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.runtime.log(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # a full disk must not fail the job from inside a log call
            self.handleError(record)


def _json_safe(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        result = {"result": result}
    safe: dict[str, Any] = json.loads(json.dumps(result, default=str))
    return safe


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, StudioError):
        return exc.message
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__


def run_job(settings: Settings, db: Database, lease: Lease, parent_pid: int | None = None) -> str:
    """Run the job under ``lease`` in this process and record how it ended; returns the final state.

    Returns ``"lost"`` (writing nothing) when the job no longer runs under ``lease``.
    """
    job = queue.get_job(db, lease.job_id)
    if queue.check_lease(db, lease) == "lost":
        log.warning("job %s is no longer running under %s; not starting it", lease.job_id, lease)
        return "lost"
    runtime = JobRuntime(settings, db, job, lease, parent_pid=parent_pid)

    def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        runtime.request_stop("shutdown")

    if parent_pid is not None:  # only when this is the job's own process: never steal a host's handlers
        signal.signal(signal.SIGTERM, _on_sigterm)
    studio_logger = logging.getLogger("studio")
    handler = JobLogHandler(runtime)
    studio_logger.addHandler(handler)
    try:
        return _run(db, lease, job, runtime)
    finally:
        studio_logger.removeHandler(handler)


def _run(db: Database, lease: Lease, job: Job, runtime: JobRuntime) -> str:
    """Run the job's kind and record how it ended (see :func:`run_job`)."""
    if runtime.resume_from is not None:
        runtime.log(f"job {job.id} ({job.kind}) attempt {lease.attempt}: resuming from {runtime.resume_from}")
    else:
        runtime.log(f"job {job.id} ({job.kind}) attempt {lease.attempt}: starting")
    try:
        kind = get_kind(job.kind)
        config = kind.config_model.model_validate(job.config)
        result = _json_safe(kind.run(config, runtime))
    except BaseException as exc:  # the job failed, however: record it, then let the process end
        runtime.log(traceback.format_exc().rstrip())
        message = _failure_message(exc)
        queue.finish(db, lease, queue.FAILED, message=message)
        if not isinstance(exc, Exception):
            raise
        return queue.FAILED
    artifact = result.get("artifact_path")
    artifact_path = str(artifact) if artifact else None
    step = f"at step {runtime.last_step}"
    checkpoint = queue.get_job(db, job.id).checkpoint_path
    kept = f"; checkpoint {checkpoint}" if checkpoint else ""
    if runtime.stop_seen and runtime.stop_reason == "cancel":
        state, message = queue.CANCELLED, f"cancelled {step}{kept}"
    elif runtime.stop_seen and runtime.stop_reason in ("shutdown", "orphaned"):
        state = queue.INTERRUPTED
        message = f"interrupted {step}: the worker was stopped{kept}; resume it to continue"
    elif runtime.stop_seen and runtime.stop_reason == "lost":
        runtime.log("stopped: the job was taken over or ended elsewhere")
        return "lost"
    else:
        state, message = queue.SUCCEEDED, "succeeded" + (f"; artifact {artifact_path}" if artifact_path else "")
    runtime.log(message)
    if not queue.finish(db, lease, state, message=message, result=result, artifact_path=artifact_path):
        return "lost"
    return state


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the job process (arguments: job id, worker id, attempt)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or not args[2].isdigit():
        print("usage: python -m studio.jobs.child JOB_ID WORKER_ID ATTEMPT", file=sys.stderr)
        return 2
    parent = die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    db = Database(settings.db_url)
    try:
        state = run_job(settings, db, Lease(args[0], args[1], int(args[2])), parent_pid=parent or os.getppid())
    finally:
        db.dispose()
    return 0 if state in (queue.SUCCEEDED, queue.CANCELLED, queue.INTERRUPTED) else 1


if __name__ == "__main__":
    sys.exit(main())
