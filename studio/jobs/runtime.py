"""``JobRuntime``: the ``JobReporter`` a job body gets when it runs under a worker, backed by the database.

Progress goes to the job row (and doubles as its heartbeat), metric points to ``job_metric`` rows, log lines to
``runs/<job_id>/log.txt``. ``should_stop()`` turns true when a cancel is requested (read from the row at most
once a second), when the worker asks the process to stop (SIGTERM: the worker is shutting down), when the
worker that started the job is gone, or when the job no longer runs under this process's lease (it was declared
interrupted meanwhile): in every case the body saves a checkpoint and returns.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from studio.db.engine import Database
from studio.db.tables import Job
from studio.jobs import queue
from studio.jobs.queue import Lease
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.jobs.reporter import JobReporter

log = logging.getLogger(__name__)

StopReason = Literal["cancel", "shutdown", "lost", "orphaned"]

CANCEL_CHECK_INTERVAL_S = 1.0


class JobRuntime:
    """What a running job can see and report: its row, its folder, its settings and database."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        job: Job,
        lease: Lease,
        parent_pid: int | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.job = job
        self.lease = lease
        self.run_dir: Path = queue.run_dir(settings, job.id)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = queue.log_path(settings, job.id)
        checkpoint = Path(job.checkpoint_path) if job.checkpoint_path else None
        #: the checkpoint to continue from when the job was resumed (None on a first run)
        self.resume_from: Path | None = checkpoint if checkpoint is not None and checkpoint.exists() else None
        self.stop_reason: StopReason | None = None
        #: True once ``should_stop()`` returned True to the body (it was told, so it stopped early)
        self.stop_seen = False
        self._parent_pid = parent_pid
        self._last_check = 0.0
        self._eta_origin: tuple[float, int] | None = None
        self._last_step = job.step

    # --- JobReporter --------------------------------------------------------------------------------------

    def progress(
        self,
        step: int,
        total_steps: int | None,
        epoch: float | None = None,
        eta_s: float | None = None,
        message: str = "",
    ) -> None:
        """Write step/total/epoch/ETA/message to the job row; the ETA is measured from step times if not given."""
        now = time.monotonic()
        if self._eta_origin is None or step < self._eta_origin[1]:
            self._eta_origin = (now, step)
        elif eta_s is None and total_steps is not None and step > self._eta_origin[1]:
            per_step = (now - self._eta_origin[0]) / (step - self._eta_origin[1])
            eta_s = max(0.0, per_step * (total_steps - step))
        self._last_step = step
        values: dict[str, Any] = {"step": step, "total_steps": total_steps, "epoch": epoch, "eta_s": eta_s}
        if total_steps:
            values["progress"] = min(1.0, max(0.0, step / total_steps))
        if message:
            values["message"] = message
        if not queue.record_progress(self.db, self.lease, **values):
            self._lose()

    def metrics(self, step: int, epoch: float | None, values: dict[str, float]) -> None:
        """Store one point of the job's curves."""
        queue.add_metric(self.db, self.lease, step, epoch, values)

    def log(self, line: str) -> None:
        """Append ``line`` (one or several lines) to ``runs/<job_id>/log.txt``, each with a time stamp."""
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        text = "".join(f"{stamp} {part}\n" for part in (line.splitlines() or [""]))
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(text)

    def should_stop(self) -> bool:
        """True when the job must save a checkpoint and return (cancel, worker shutdown, lost lease)."""
        if self.stop_reason is None:
            if self._parent_pid is not None and os.getppid() != self._parent_pid:
                self.stop_reason = "orphaned"
            else:
                now = time.monotonic()
                if now - self._last_check >= CANCEL_CHECK_INTERVAL_S:
                    self._last_check = now
                    status = queue.check_lease(self.db, self.lease)
                    if status == "cancel_requested":
                        self.stop_reason = "cancel"
                    elif status == "lost":
                        self._lose()
        if self.stop_reason is not None:
            self.stop_seen = True
            return True
        return False

    def checkpoint_saved(self, path: Path) -> None:
        """Remember ``path`` as the job's latest checkpoint (what ``resume`` continues from)."""
        self.log(f"checkpoint saved: {path}")
        if not queue.record_progress(self.db, self.lease, checkpoint_path=str(path)):
            self._lose()

    # --- for the job process --------------------------------------------------------------------------------

    def request_stop(self, reason: StopReason = "shutdown") -> None:
        """Make ``should_stop()`` true (the SIGTERM handler calls this; it only sets an attribute)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def last_step(self) -> int:
        """The last step reported through ``progress`` (the row's step at start)."""
        return self._last_step

    def _lose(self) -> None:
        if self.stop_reason != "lost":
            log.warning("job %s no longer runs under lease %s; stopping", self.job.id, self.lease)
        self.stop_reason = "lost"


def _conforms(runtime: JobRuntime) -> JobReporter:
    return runtime  # mypy checks here that JobRuntime implements the JobReporter protocol
