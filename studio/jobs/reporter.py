"""The seam between a running job and the queue: what a job body may report and ask while it runs.

``studio.jobs`` implements it (writing to the ``job`` / ``job_metric`` rows and ``runs/<job>/log.txt``);
job bodies (``studio.finetune``, evaluation, audits) only see this protocol, so they run the same in a
worker, in a test with an in-memory reporter, or in a plain script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class JobReporter(Protocol):
    """Progress, metrics, logs and cancellation for one running job."""

    def progress(
        self,
        step: int,
        total_steps: int | None,
        epoch: float | None = None,
        eta_s: float | None = None,
        message: str = "",
    ) -> None:
        """Record where the job stands (also serves as the heartbeat)."""

    def metrics(self, step: int, epoch: float | None, values: dict[str, float]) -> None:
        """Record one point of the job's curves (train_loss, eval_loss, learning_rate, grad_norm, ...)."""

    def log(self, line: str) -> None:
        """Append one line to the job's log (shown as the log tail in the UI)."""

    def should_stop(self) -> bool:
        """True once a cancel was requested: the job saves a checkpoint at the next step and returns."""

    def checkpoint_saved(self, path: Path) -> None:
        """A resumable checkpoint was written at ``path`` (``resume`` continues from the latest one)."""


class MemoryReporter:
    """A reporter that keeps everything in lists: for tests and for running a job body in-process."""

    def __init__(self, stop_after_step: int | None = None) -> None:
        self.progress_calls: list[tuple[int, int | None, float | None, float | None, str]] = []
        self.metric_points: list[tuple[int, float | None, dict[str, float]]] = []
        self.lines: list[str] = []
        self.checkpoints: list[Path] = []
        self.stop_after_step = stop_after_step

    def progress(
        self,
        step: int,
        total_steps: int | None,
        epoch: float | None = None,
        eta_s: float | None = None,
        message: str = "",
    ) -> None:
        self.progress_calls.append((step, total_steps, epoch, eta_s, message))

    def metrics(self, step: int, epoch: float | None, values: dict[str, float]) -> None:
        self.metric_points.append((step, epoch, dict(values)))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def should_stop(self) -> bool:
        if self.stop_after_step is None or not self.progress_calls:
            return False
        return self.progress_calls[-1][0] >= self.stop_after_step

    def checkpoint_saved(self, path: Path) -> None:
        self.checkpoints.append(path)
