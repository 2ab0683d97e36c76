"""Closing the loop: preference data → a DPO (or reward-model) job → its adapter back into Compare.

The Compare tab prefills a job config for the dataset version it just exported, submits it to the job queue
(the worker trains it like any other job), and, once a DPO job has succeeded, offers its registered adapter as
a contender against the base model it was trained from.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.compare.stream import ContenderSpec
from studio.db.engine import Database
from studio.db.tables import Job
from studio.errors import ValidationError
from studio.jobs import queue
from studio.settings import BUNDLED_MODEL_ID, Settings
from studio.training.preference import DpoConfig, RewardModelConfig, config_yaml, parse_config_yaml


def preference_job_yaml(
    kind: str, dataset: str, version: int | None = None, base_model: str | None = None, *, max_steps: int | None = None
) -> str:
    """A ready-to-submit ``dpo`` or ``reward`` config for a preference dataset version (LoRA, schema defaults)."""
    if not dataset:
        raise ValidationError("export a preference dataset first (or type its name)", param="dataset")
    name = f"{kind}-{dataset}"[:100]
    common = {
        "name": name,
        "dataset": dataset,
        "dataset_version": version,
        "base_model": base_model or BUNDLED_MODEL_ID,
        "max_steps": max_steps,
        "output_name": "".join(c if c.isalnum() or c in "_.-" else "-" for c in name).strip("-.")[:100] or None,
    }
    if kind == "dpo":
        return config_yaml(DpoConfig(**common))  # type: ignore[arg-type]
    if kind == "reward":
        return config_yaml(RewardModelConfig(**common))  # type: ignore[arg-type]
    raise ValidationError(f"kind must be 'dpo' or 'reward', not {kind!r}", param="kind")


def submit_preference_job(settings: Settings, db: Database, text: str) -> Job:
    """Validate a ``dpo``/``reward`` YAML config and queue it (the dataset version is pinned at submit)."""
    config = parse_config_yaml(text)
    return queue.submit(db, config.kind, config.model_dump(mode="json"), settings=settings)


def job_status(db: Database, job_id: str) -> str:
    """One line about a job: state, step, message, and what it produced."""
    job = queue.get_job(db, job_id)
    steps = f" · step {job.step}/{job.total_steps}" if job.total_steps else ""
    made = f" · adapter **{job.result['registered_as']}**" if job.result.get("registered_as") else ""
    if not made and job.artifact_path:
        made = f" · saved in {job.artifact_path}"
    return f"{job.kind} job `{job.id[:8]}` **{job.state}**{steps} · {job.message}{made}"


@dataclass(frozen=True)
class TrainedAdapter:
    """A finished DPO job's adapter and the base model it belongs on."""

    job_id: str
    adapter: str
    base_model: str

    @property
    def contenders(self) -> list[str]:
        """The loop-closing comparison: the base model against base + adapter."""
        return [ContenderSpec(self.base_model).label, ContenderSpec(self.base_model, self.adapter).label]


def trained_adapters(db: Database, limit: int = 50) -> list[TrainedAdapter]:
    """Succeeded DPO jobs whose adapter was registered, newest first."""
    out = []
    for job in queue.list_jobs(db, state="succeeded", kind="dpo", limit=limit):
        name = job.result.get("registered_as")
        if name and job.result.get("artifact") == "adapter":
            out.append(TrainedAdapter(job.id, str(name), str(job.result.get("base_model") or BUNDLED_MODEL_ID)))
    return out


def adapter_from_job(db: Database, job_id: str) -> TrainedAdapter:
    """The adapter a DPO job produced; ``ValidationError`` while it has not succeeded (says its state)."""
    job = queue.get_job(db, job_id)
    name = job.result.get("registered_as")
    if job.kind != "dpo" or job.state != "succeeded" or not name or job.result.get("artifact") != "adapter":
        raise ValidationError(
            f"job {job_id[:8]} ({job.kind}, {job.state}) has no finished DPO adapter to compare yet", param="job_id"
        )
    return TrainedAdapter(job.id, str(name), str(job.result.get("base_model") or BUNDLED_MODEL_ID))
