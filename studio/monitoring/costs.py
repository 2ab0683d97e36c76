"""Cost (issue 20, point 4): the user's own price table (``configs/costs.yaml``, overridden by
``STUDIO_HOME/costs.yaml``) times measured durations -- a job's estimated cost before it runs (from the estimated
duration the wizard measures), its actual cost after (from its measured running time), and totals per day (UTC),
per user and per experiment (a job's kind and name).

A job on the ``cpu`` slot is charged every core of the machine (training uses them all); a job on ``cuda[:N]`` is
charged one GPU at the price of the GPU's name as NVML reports it, else ``gpu_per_hour.default``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from studio.db.engine import Database
from studio.db.tables import Job
from studio.errors import ValidationError
from studio.files import write_text_atomic
from studio.settings import CONFIG_DIR, Settings

SHIPPED = CONFIG_DIR / "costs.yaml"


class CostTable(BaseModel):
    """The price table: ``currency``, ``source`` (where the figures come from), per CPU core hour, per GPU hour."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field(min_length=1, max_length=8, description="ISO code or symbol, e.g. USD, EUR.")
    source: str = Field(default="", max_length=500, description="Where these figures come from, and when.")
    cpu_core_per_hour: float = Field(ge=0, le=1000, description="Price of one CPU core for one hour.")
    gpu_per_hour: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.0},
        description="Price of one GPU for one hour by its NVML name; 'default' for any other GPU.",
    )

    @field_validator("gpu_per_hour")
    @classmethod
    def _prices(cls, v: dict[str, float]) -> dict[str, float]:
        if "default" not in v:
            raise ValueError("needs a 'default' price for GPUs not named")
        for name, price in v.items():
            if not 0 <= price <= 10_000:
                raise ValueError(f"the price of {name!r} must be between 0 and 10000; got {price}")
        return v


def costs_path(settings: Settings) -> Path:
    return settings.home / "costs.yaml"


def parse_costs(text: str, source: str = "costs.yaml") -> CostTable:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML ({exc})", param="costs") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{source}: the price table must be a mapping (currency, cpu_core_per_hour, ...)")
    try:
        return CostTable.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "costs"
        raise ValidationError(f"{source}: {where}: {err.get('msg')}", param=where) from None


def load_costs(settings: Settings) -> tuple[CostTable, str]:
    """The price table in force and its text (the user's copy in STUDIO_HOME, else the shipped example)."""
    path = costs_path(settings)
    text = path.read_text(encoding="utf-8") if path.is_file() else SHIPPED.read_text(encoding="utf-8")
    return parse_costs(text, str(path if path.is_file() else SHIPPED)), text


def save_costs(settings: Settings, text: str) -> CostTable:
    """Check and write the user's price table (atomically); nothing is written when it is invalid."""
    table = parse_costs(text)
    write_text_atomic(costs_path(settings), text if text.endswith("\n") else text + "\n")
    return table


def gpu_name(index: int = 0) -> str | None:
    """The NVML name of GPU ``index`` (None without a GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


@dataclass(frozen=True)
class Price:
    per_hour: float
    currency: str
    basis: str  # "2 CPU cores x 0.04 USD/h" | "1 GPU (NVIDIA L4) x 0.70 USD/h"


def price_for(table: CostTable, device: str, *, cores: int | None = None, gpu: str | None = None) -> Price:
    """What an hour on ``device`` costs by the table."""
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device and device.split(":", 1)[1].isdigit() else 0
        name = gpu if gpu is not None else gpu_name(index)
        price = table.gpu_per_hour.get(name or "", table.gpu_per_hour["default"])
        label = name or "a GPU"
        return Price(price, table.currency, f"1 GPU ({label}) x {price:g} {table.currency}/h")
    n = cores or os.cpu_count() or 1
    return Price(
        n * table.cpu_core_per_hour, table.currency, f"{n} CPU cores x {table.cpu_core_per_hour:g} {table.currency}/h"
    )


@dataclass(frozen=True)
class Cost:
    amount: float
    currency: str
    hours: float
    basis: str

    def text(self) -> str:
        return f"{self.amount:.4f} {self.currency} ({self.hours * 60:.1f} min at {self.basis})"


def estimated_cost(table: CostTable, seconds: float, device: str, **kw: Any) -> Cost:
    """The cost of ``seconds`` on ``device`` (the wizard's estimate before a job runs)."""
    price = price_for(table, device, **kw)
    hours = max(0.0, seconds) / 3600
    return Cost(hours * price.per_hour, price.currency, hours, price.basis)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def job_hours(job: Job, now: datetime | None = None) -> float:
    """Hours the job ran (started to finished; to now while running; 0 before it starts)."""
    if job.started_at is None:
        return 0.0
    end = _utc(job.finished_at) if job.finished_at is not None else (now or datetime.now(UTC))
    return max(0.0, (end - _utc(job.started_at)).total_seconds() / 3600)


def job_cost(table: CostTable, job: Job, **kw: Any) -> Cost:
    """The actual cost of a job from its measured running time."""
    price = price_for(table, job.device, **kw)
    hours = job_hours(job)
    return Cost(hours * price.per_hour, price.currency, hours, price.basis)


@dataclass(frozen=True)
class CostTotal:
    key: str  # a day (YYYY-MM-DD), a user name, or "kind: name"
    jobs: int
    hours: float
    amount: float
    currency: str


def cost_totals(
    db: Database, table: CostTable, by: str, *, owners: dict[str, str] | None = None, jobs: Iterable[Job] | None = None
) -> list[CostTotal]:
    """Totals of the jobs that ran, ``by`` "day" (UTC, of the start), "user" or "experiment" (kind: name)."""
    if by not in ("day", "user", "experiment"):
        raise ValidationError(f"totals are by day, user or experiment; got {by!r}", param="by")
    if jobs is None:
        from sqlmodel import col, select

        from studio.users.ownership import visible

        with db.session() as s:
            jobs = list(s.exec(visible(select(Job), Job.owner_id, Job.private).where(col(Job.started_at).is_not(None))))
    names = owners or {}
    sums: dict[str, list[float]] = {}
    gpu_cache: dict[str, Price] = {}
    for job in jobs:
        if job.started_at is None:
            continue
        if by == "day":
            key = _utc(job.started_at).strftime("%Y-%m-%d")
        elif by == "user":
            key = names.get(job.owner_id or "", "") or "(no user)"
        else:
            key = f"{job.kind}: {job.name or job.id[:8]}"
        price = gpu_cache.get(job.device) or price_for(table, job.device)
        gpu_cache[job.device] = price
        hours = job_hours(job)
        acc = sums.setdefault(key, [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += hours
        acc[2] += hours * price.per_hour
    rows = [CostTotal(k, int(v[0]), v[1], v[2], table.currency) for k, v in sums.items()]
    return sorted(rows, key=lambda r: r.key, reverse=(by == "day"))
