"""Tables of resource monitoring (created by migration 10)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from studio.db.tables import utcnow


class JobResource(SQLModel, table=True):
    """One sample of a job's process tree, taken by its worker every few seconds; finished jobs keep theirs."""

    __tablename__ = "job_resource"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", ondelete="CASCADE", index=True, max_length=32)
    at: datetime = Field(default_factory=utcnow)
    cpu_percent: float = 0.0  # of one core (200 = two cores busy), summed over the tree
    rss_bytes: int = 0  # resident memory of the tree
    gpu_memory_bytes: int | None = None  # NVML: memory the tree's processes hold on the GPUs (None: no GPU)
    disk_write_bytes: int | None = None  # written by the tree since the job started (None: not measurable)
    processes: int = 1
    device: str = Field(default="cpu", max_length=32)  # the worker's device slot


MONITORING_TABLES = (JobResource,)
