"""The ``download`` job kind: a model from the Hugging Face Hub into the Hugging Face cache, in the background.

States are the job queue's (``studio.jobs.queue``). At submit, :func:`prepare_download` lists the repo (so a wrong
name, a gated repo without a token or an offline machine is refused at once, before anything is queued) and stores
the commit, the files and the bytes the user saw. The job (:func:`run_download`, in its own process):

1. lists the repo again (the branch may have moved) and writes a pending marker
   (``STUDIO_HOME/downloads/<job>.json``, :func:`studio.models.registry.write_pending_marker`) that keeps the
   registry from listing the snapshot until it is complete; the marker is the job's checkpoint, so a cancelled,
   failed or interrupted download can be resumed;
2. downloads with :func:`studio.models.fetch.download_files`: progress goes to the job row (step/total in KiB, the
   ETA, a message with bytes, speed and file) and to ``job_metric`` (exact bytes and bytes/s); a cancel stops it
   within a second, keeping every byte that arrived;
3. on success removes the marker and returns the snapshot folder and the model ids the registry now lists.

Resuming (``studio jobs resume``, the Models tab's Resume) runs it again: files already complete are skipped and
a partial one continues with a ``Range`` request from its last byte. Downloads use the device slot ``download``
(``studio serve`` starts a worker for it), so they never wait behind a training job.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studio.db.engine import Database
from studio.db.tables import Job
from studio.errors import ValidationError
from studio.jobs import queue
from studio.jobs.kinds import JobKind, register_kind
from studio.models.fetch import DownloadProgress, download_files
from studio.models.hub import (
    check_repo_filename,
    check_repo_id,
    check_revision,
    hub_endpoint,
    human_bytes,
    list_hub_files,
    quant_of,
)
from studio.models.registry import ModelRegistry, write_pending_marker
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.jobs.runtime import JobRuntime

KIND = "download"
_CHECKPOINT = re.compile(r";? (last )?checkpoint [^\s;]+")
_STEP = re.compile(r"\bat step (\d+)")  # a download's step is a KiB
DOWNLOAD_DEVICE = "download"  # the device slot downloads run on: one at a time, beside training jobs
METRIC_EVERY_S = 1.0


class DownloadConfig(BaseModel):
    """A download from the Hugging Face Hub (``kind: download``). The last three fields are filled at submit."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(
        description="The model's repo id on the Hugging Face Hub, e.g. HuggingFaceTB/SmolLM2-135M-Instruct."
    )
    revision: str | None = Field(default=None, description="A branch, tag or commit (default: main).")
    file: str | None = Field(
        default=None,
        description="GGUF repos: one file name, or a quant such as Q4_K_M. Leave empty for a transformers model.",
    )
    name: str = Field(default="", max_length=200, description="Shown in the job list (default: the repo).")
    commit: str | None = Field(default=None, description="The commit the listing showed (set at submit).")
    files: list[str] = Field(default_factory=list, description="The files the download takes (set at submit).")
    bytes_total: int = Field(default=0, ge=0, description="Bytes to download (set at submit).")

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        return check_repo_id(v)

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        return check_revision(v)

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        return check_repo_filename(v) if v and v.strip() else None

    @field_validator("files")
    @classmethod
    def _files(cls, v: list[str]) -> list[str]:
        return [check_repo_filename(f, param="files") for f in v]


def display_name(repo: str, file: str | None) -> str:
    """``org/name`` or ``org/name:Q4_K_M`` (the registry's id for a GGUF quant)."""
    if not file:
        return repo
    quant = quant_of(file) if file.lower().endswith(".gguf") else file.upper()
    return f"{repo}:{quant}" if quant else f"{repo}/{file}"


def prepare_download(config: DownloadConfig, settings: Settings, db: Database) -> DownloadConfig:
    """At submit: list the repo (refusing what cannot be downloaded) and pin the commit, files and size shown."""
    listing = list_hub_files(settings, config.repo, config.revision, config.file)
    return config.model_copy(
        update={
            "commit": listing.commit,
            "files": listing.selected,
            "bytes_total": listing.download_bytes,
            "name": config.name or display_name(config.repo, config.file),
        }
    )


def run_download(config: DownloadConfig, runtime: JobRuntime) -> dict[str, Any]:
    """Download the model (resuming what an earlier attempt left) and report progress to the job row."""
    settings = runtime.settings
    listing = list_hub_files(settings, config.repo, config.revision, config.file)
    if config.commit and listing.commit != config.commit:
        runtime.log(f"{listing.revision} moved from {config.commit[:12]} to {listing.commit[:12]} since the listing")
    marker = write_pending_marker(settings, runtime.job.id, config.repo, listing.commit, listing.selected)
    if runtime.resume_from is None:
        runtime.checkpoint_saved(marker)  # what makes a cancelled or failed download resumable
    runtime.log(
        f"downloading {len(listing.selected)} files of {config.repo} at {listing.commit[:12]} "
        f"({human_bytes(listing.download_bytes)} to fetch) from {hub_endpoint()} into the Hugging Face cache"
    )
    last_metric = [0.0]
    started = time.monotonic()

    def report(p: DownloadProgress) -> None:
        runtime.progress(p.bytes_done // 1024, max(1, p.bytes_total // 1024), eta_s=p.eta_s, message=p.summary())
        now = time.monotonic()
        if now - last_metric[0] >= METRIC_EVERY_S or p.bytes_done >= p.bytes_total:
            last_metric[0] = now
            values = {"bytes_done": float(p.bytes_done), "bytes_total": float(p.bytes_total)}
            if p.bytes_per_s:
                values["bytes_per_s"] = p.bytes_per_s
            runtime.metrics(p.bytes_done // 1024, None, values)

    outcome = download_files(settings, listing, report, runtime.should_stop)
    took = time.monotonic() - started
    if outcome.stopped:
        runtime.log(f"stopped after {human_bytes(outcome.bytes_fetched)}; the bytes so far are kept: resume to go on")
        return {"stopped": True, "repo": config.repo, "bytes_fetched": outcome.bytes_fetched}
    marker.unlink(missing_ok=True)
    if outcome.snapshot is None:  # cannot happen: a download that was not stopped has its snapshot
        raise RuntimeError("the download ended without a snapshot")
    snapshot = outcome.snapshot
    models = [
        e.id
        for e in ModelRegistry(settings).list_models()
        if e.path == snapshot or (e.path.parent == snapshot and e.filename in outcome.files)
    ]
    runtime.log(
        f"downloaded {config.repo} ({human_bytes(outcome.bytes_fetched)} in {took:.1f} s); "
        f"the registry lists it as {', '.join(models) or '(nothing loadable)'}"
    )
    return {
        "artifact_path": str(outcome.snapshot),
        "repo": config.repo,
        "commit": outcome.commit,
        "files": outcome.files,
        "bytes_fetched": outcome.bytes_fetched,
        "seconds": round(took, 2),
        "models": models,
    }


def submit_download(
    settings: Settings,
    db: Database,
    repo: str,
    revision: str | None = None,
    file: str | None = None,
    device: str = DOWNLOAD_DEVICE,
    priority: int | None = None,
) -> Job:
    """Queue a download (after listing the repo: a wrong name, a gated repo without a token or an offline machine is
    refused here). Returns the job; its config holds the commit, files and bytes the user was shown."""
    config = {"repo": repo, "revision": revision or None, "file": (file or "").strip() or None}
    return queue.submit(db, KIND, config, device=device, priority=priority, settings=settings)


@dataclass(frozen=True)
class DownloadStatus:
    """A download job as the Models tab and ``studio models pull`` show it."""

    job_id: str
    name: str
    repo: str
    state: str
    bytes_done: int
    bytes_total: int
    bytes_per_s: float | None
    eta_s: float | None
    message: str
    models: list[str]
    can_cancel: bool
    can_resume: bool

    def progress_text(self) -> str:
        """``12.3 MB of 45.6 MB (27%)``."""
        pct = f" ({100 * self.bytes_done / self.bytes_total:.0f}%)" if self.bytes_total else ""
        return f"{human_bytes(self.bytes_done)} of {human_bytes(self.bytes_total)}{pct}"

    def speed_text(self) -> str:
        """``3.2 MB/s`` while running, else ``-``."""
        return f"{human_bytes(int(self.bytes_per_s))}/s" if self.bytes_per_s and self.state == "running" else "-"

    def eta_text(self) -> str:
        """``1 min 5 s`` while running, else ``-``."""
        from studio.models.hub import human_duration

        return human_duration(self.eta_s) if self.eta_s is not None and self.state == "running" else "-"


def download_status(db: Database, job: Job | str) -> DownloadStatus:
    """Where a download job stands: exact bytes and speed from its last metric point, the rest from its row."""
    row = job if isinstance(job, Job) else queue.get_job(db, job)
    if row.kind != KIND:
        raise ValidationError(f"job {row.id} is a {row.kind} job, not a download", param="id")
    points = queue.job_metrics(db, row.id)
    last = points[-1].values if points else {}
    total = int(row.config.get("bytes_total") or 0) or int(last.get("bytes_total", 0))
    if row.total_steps:
        total = int(last.get("bytes_total", row.total_steps * 1024))
    done = int(last.get("bytes_done", row.step * 1024))
    models = [str(m) for m in row.result.get("models", [])]
    # the queue's messages name the checkpoint (the pending marker) by path: a user needs what to do instead
    message = _STEP.sub(lambda m: f"at {human_bytes(int(m[1]) * 1024)}", _CHECKPOINT.sub("", row.message))
    if row.state in queue.RESUMABLE_STATES and "resume" not in message:
        message += "; resume it to go on from the bytes already downloaded"
    if row.state == queue.SUCCEEDED:
        done = total = max(total, done, int(row.config.get("bytes_total") or 0))
        # the job's own message names the snapshot's absolute path; a user needs the model's name
        message = f"ready as {', '.join(models)}" if models else "downloaded (nothing the studio can load)"
    return DownloadStatus(
        job_id=row.id,
        name=row.name or str(row.config.get("repo", "")),
        repo=str(row.config.get("repo", "")),
        state=row.state,
        bytes_done=done,
        bytes_total=total,
        bytes_per_s=float(last["bytes_per_s"]) if last.get("bytes_per_s") else None,
        eta_s=row.eta_s,
        message=message,
        models=models,
        can_cancel=row.state == queue.QUEUED or (row.state == queue.RUNNING and not row.cancel_requested),
        can_resume=row.state in queue.RESUMABLE_STATES,
    )


def list_downloads(db: Database, limit: int = 20) -> list[DownloadStatus]:
    """The latest download jobs, newest first."""
    return [download_status(db, job) for job in queue.list_jobs(db, kind=KIND, limit=limit)]


def cancel_download(db: Database, job_id: str) -> DownloadStatus:
    """Stop a download (within a second); what arrived is kept for a resume."""
    download_status(db, job_id)  # a download job, else a ValidationError
    return download_status(db, queue.request_cancel(db, job_id))


def resume_download(db: Database, job_id: str) -> DownloadStatus:
    """Queue a cancelled, failed or interrupted download again; it goes on from the bytes already on disk."""
    download_status(db, job_id)
    return download_status(db, queue.resume(db, job_id))


register_kind(
    JobKind(
        name=KIND,
        config_model=DownloadConfig,
        run=run_download,
        description="Download a model from the Hugging Face Hub into the Hugging Face cache (resumable).",
        prepare=lambda config, settings, db: prepare_download(config, settings, db),
    )
)
