"""What each job uses: its worker samples the job's process tree into ``job_resource`` every few seconds.

The worker (``studio.jobs.worker.Worker._watch``) already wakes every ``watch_s`` to look after the job process;
every ``WorkerOptions.resource_s`` it also calls ``JobSampler.record()``, which reads the tree -- the job process
and its children, recursively (data loaders, helpers) -- and writes one ``JobResource`` row:

- CPU %: CPU time the tree used since the previous sample over the wall time between them, summed over the
  processes (200 = two cores busy). A process seen for the first time counts from its creation.
- RSS: resident memory of the tree now.
- Disk written: bytes the tree's processes wrote since the job started (``io_counters().write_bytes``, kept per
  process so that a child that exited still counts); None where the OS does not tell (macOS, no /proc/PID/io).
- GPU memory: what NVML says the tree's PIDs hold on the GPUs; None without a GPU.
- Processes: how many the tree has now; the worker's device slot.

Rows stay after the job ends (they go with the job row: ``ON DELETE CASCADE``). A sample reads a few /proc
files per process and costs well under a millisecond of CPU for a small tree; a failed read or write is logged
and skipped -- monitoring never stops a job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psutil
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from studio.db.engine import Database
from studio.monitoring.system import GIB, Nvml
from studio.monitoring.tables import JobResource

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

MIB = 1024**2


class JobSampler:
    """Samples one job's process tree (the process ``pid`` and its descendants) for ``job_id``."""

    def __init__(self, job_id: str, pid: int, device: str, nvml: Nvml | None = None) -> None:
        self.job_id = job_id
        self.pid = pid
        self.device = device
        self.nvml = nvml
        # per process (pid, create time): CPU seconds and when they were read; bytes written, last seen
        self._cpu: dict[tuple[int, float], tuple[float, float]] = {}
        self._written: dict[tuple[int, float], int] = {}
        self._io_readable = hasattr(psutil.Process, "io_counters")
        self.last_cost_s = 0.0  # CPU time of the last sample (this thread's)

    def sample(self) -> JobResource | None:
        """Read the tree now; None when the job process is gone."""
        started = time.thread_time()
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        now = time.time()
        cpu_percent = 0.0
        rss = 0
        alive: list[int] = []
        cpu_seen: dict[tuple[int, float], tuple[float, float]] = {}
        for proc in tree:
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: no memory, no more CPU
                        continue
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    used = times.user + times.system
                    resident = proc.memory_info().rss
                    if resident == 0:  # it exited between the status and the memory read: a live process has pages
                        continue
                    rss += resident
                    if self._io_readable:
                        self._read_written(proc, key)
            except psutil.Error:  # it ended between the listing and the read
                continue
            before, since = self._cpu.get(key, (0.0, key[1]))
            if now > since:
                cpu_percent += 100.0 * max(0.0, used - before) / (now - since)
            cpu_seen[key] = (used, now)
            alive.append(proc.pid)
        if not alive:
            return None
        self._cpu = cpu_seen
        row = JobResource(
            job_id=self.job_id,
            at=datetime.fromtimestamp(now, UTC),
            cpu_percent=round(cpu_percent, 1),
            rss_bytes=rss,
            gpu_memory_bytes=self.nvml.process_memory(alive) if self.nvml is not None else None,
            disk_write_bytes=sum(self._written.values()) if self._io_readable else None,
            processes=len(alive),
            device=self.device,
        )
        self.last_cost_s = time.thread_time() - started
        return row

    def _read_written(self, proc: psutil.Process, key: tuple[int, float]) -> None:
        try:
            self._written[key] = int(proc.io_counters().write_bytes)
        except (psutil.AccessDenied, NotImplementedError, AttributeError):
            self._io_readable = False  # not measurable here: say None rather than a partial figure
            self._written.clear()

    def record(self, db: Database) -> JobResource | None:
        """Sample the tree and store the row; returns it (None if the process is gone or the write failed)."""
        row = self.sample()
        if row is None:
            return None
        try:
            with db.session() as session:
                session.add(row)
        except SQLAlchemyError as exc:  # a database hiccup costs one sample, never the job
            log.warning("job %s: resource sample not stored (%s)", self.job_id, exc)
            return None
        return row


def job_resources(db: Database, job_id: str) -> list[JobResource]:
    """The job's resource samples, oldest first."""
    with db.session() as session:
        statement = (
            select(JobResource).where(JobResource.job_id == job_id).order_by(col(JobResource.at), col(JobResource.id))
        )
        return list(session.exec(statement).all())


@dataclass(frozen=True)
class ResourcePeaks:
    """The highest value of each figure over a job's samples, and the device slot it ran on."""

    samples: int
    cpu_percent: float
    rss_bytes: int
    gpu_memory_bytes: int | None  # None: no GPU was sampled
    disk_write_bytes: int | None  # None: not measurable on this OS
    processes: int
    device: str

    def summary(self) -> str:
        """One line: "peaks: CPU 180% · RSS 1.2 GiB · GPU 3.0 GiB · written 40 MiB · 3 processes · device cpu"."""
        parts = [f"CPU {self.cpu_percent:.0f}%", f"RSS {_size(self.rss_bytes)}"]
        if self.gpu_memory_bytes is not None:
            parts.append(f"GPU {_size(self.gpu_memory_bytes)}")
        if self.disk_write_bytes is not None:
            parts.append(f"written {_size(self.disk_write_bytes)}")
        parts.append(f"{self.processes} process{'es' if self.processes != 1 else ''}")
        return f"peaks: {' · '.join(parts)} · device {self.device}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "samples": self.samples,
            "cpu_percent": self.cpu_percent,
            "rss_bytes": self.rss_bytes,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "disk_write_bytes": self.disk_write_bytes,
            "processes": self.processes,
            "device": self.device,
        }


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def _peak(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def resource_peaks(rows: Sequence[JobResource]) -> ResourcePeaks | None:
    """Peaks over a job's samples (from ``job_resources``); None when it has none."""
    if not rows:
        return None
    return ResourcePeaks(
        samples=len(rows),
        cpu_percent=max(r.cpu_percent for r in rows),
        rss_bytes=max(r.rss_bytes for r in rows),
        gpu_memory_bytes=_peak([r.gpu_memory_bytes for r in rows]),
        disk_write_bytes=_peak([r.disk_write_bytes for r in rows]),
        processes=max(r.processes for r in rows),
        device=rows[-1].device,
    )


def job_resources_figure(rows: Sequence[JobResource]) -> go.Figure:
    """CPU % (left axis) and RSS / GPU memory in MiB (right axis) over the job's time, peaks and device in the
    title (the Fine-Tune monitor shows it beside the loss curves)."""
    import plotly.graph_objects as go

    peaks = resource_peaks(rows)
    times = [r.at for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=times, y=[r.cpu_percent for r in rows], name="CPU %", mode="lines"))
    fig.add_trace(go.Scatter(x=times, y=[r.rss_bytes / MIB for r in rows], name="RSS MiB", yaxis="y2", mode="lines"))
    if peaks is not None and peaks.gpu_memory_bytes is not None:
        gpu = [r.gpu_memory_bytes / MIB if r.gpu_memory_bytes is not None else None for r in rows]
        fig.add_trace(go.Scatter(x=times, y=gpu, name="GPU MiB", yaxis="y2", mode="lines"))
    title = peaks.summary() if peaks is not None else "Job resources: no samples yet (the worker takes one every 5 s)"
    fig.update_layout(
        title={"text": title, "font": {"size": 12}},
        height=300,
        margin={"l": 50, "r": 50, "t": 45, "b": 35},
        yaxis={"title": "CPU %", "rangemode": "tozero"},
        yaxis2={"title": "MiB", "overlaying": "y", "side": "right", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
