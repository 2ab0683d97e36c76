"""Disk (issue 20, point 3): what each model, adapter, export, dataset and run takes on disk, the free space of the
volume, and clean-ups that say what they will free before they do it.

A clean-up is planned first (:func:`plan_checkpoints`, :func:`plan_dataset_versions`): the plan lists the exact
paths and bytes, and what it refuses with the reason (a checkpoint a job can still resume from, a dataset version a
job names). :func:`apply_plan` plans again and deletes only if the new plan is the one shown (else ConflictError:
something changed, look again), so it frees exactly what it announced. Members may clean up only their own jobs
and datasets (:mod:`studio.users.ownership`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from studio.db.engine import Database
from studio.db.tables import Dataset, DatasetVersion, Job
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.settings import Settings
from studio.users.ownership import check_owner

KINDS = ("model", "adapter", "export", "dataset", "run")
CHECKPOINT_PREFIX = "checkpoint-"


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed: a model linked from the Hugging Face
    cache is counted where it lives, not here)."""
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            if not p.is_symlink():
                total += st.st_size
    return total


@dataclass(frozen=True)
class DiskItem:
    kind: str  # model | adapter | export | dataset | run
    name: str
    bytes: int
    location: str  # relative to STUDIO_HOME (not "path": gradio_client takes a dict with a "path" for a file)
    detail: str = ""


@dataclass(frozen=True)
class DiskReport:
    items: list[DiskItem]  # largest first
    used_bytes: int  # the items together
    free_bytes: int  # of the volume holding STUDIO_HOME
    volume_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [item.__dict__ for item in self.items],
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes,
            "volume_bytes": self.volume_bytes,
        }


def _children(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def disk_usage(settings: Settings, db: Database) -> DiskReport:
    """Every model, adapter, export, dataset (all versions) and run under STUDIO_HOME with its size, largest first."""
    home = settings.home
    items: list[DiskItem] = []

    def rel(path: Path) -> str:
        return path.relative_to(home).as_posix()

    for path in _children(home / "models"):
        items.append(DiskItem("model", path.name, tree_bytes(path), rel(path)))
    for path in _children(home / "adapters"):
        detail = "trained (its files are in its run)" if path.is_symlink() else "uploaded"
        items.append(DiskItem("adapter", path.name, tree_bytes(path), rel(path), detail))
    for path in _children(home / "exports"):
        items.append(DiskItem("export", path.name, tree_bytes(path), rel(path)))
    with db.session() as s:
        datasets = {d.id: d for d in s.exec(select(Dataset)).all()}
        counts: dict[str, int] = {}
        for v in s.exec(select(DatasetVersion)).all():
            counts[v.dataset_id] = counts.get(v.dataset_id, 0) + 1
        jobs = {j.id: j for j in s.exec(select(Job)).all()}
    for dataset_id, dataset in datasets.items():
        path = home / "datasets" / dataset_id
        n = counts.get(dataset_id, 0)
        items.append(
            DiskItem("dataset", dataset.name, tree_bytes(path), rel(path), f"{n} version{'s' if n != 1 else ''}")
        )
    for path in _children(home / "runs"):
        job = jobs.get(path.name)
        checkpoints = _checkpoints(path)
        detail = f"{job.kind} · {job.state}" if job is not None else "no job row"
        if checkpoints:
            detail += f" · {len(checkpoints)} checkpoint{'s' if len(checkpoints) != 1 else ''}"
        items.append(DiskItem("run", path.name, tree_bytes(path), rel(path), detail))
    items.sort(key=lambda i: (-i.bytes, i.kind, i.name))
    usage = shutil.disk_usage(home)
    return DiskReport(items, sum(i.bytes for i in items), usage.free, usage.total)


# -- clean-ups -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CleanupPlan:
    """What a clean-up would delete (``paths``, ``bytes``) and what it keeps, with the reason (``kept``)."""

    action: str  # checkpoints | checkpoints-all | dataset-versions
    target: str  # a job id or a dataset name
    paths: list[str] = field(default_factory=list)  # relative to STUDIO_HOME
    bytes: int = 0
    kept: list[str] = field(default_factory=list)  # "<what>: <why>"
    version_ids: list[str] = field(default_factory=list)  # dataset versions whose rows go too

    def summary(self) -> str:
        """One line for people: what it frees, or why it frees nothing."""
        from studio.models.hub import human_bytes

        if not self.paths and not self.version_ids:
            why = "; ".join(self.kept) or "nothing to delete"
            return f"Nothing to free for {self.target}: {why}"
        what = f"{len(self.paths)} folder(s)/file(s)"
        return f"Frees {human_bytes(self.bytes)} ({what}) of {self.target}" + (
            f"; keeps {'; '.join(self.kept)}" if self.kept else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checkpoints(run: Path) -> list[Path]:
    """The HF Trainer checkpoints of a run (``checkpoints/checkpoint-<step>``), oldest step first."""
    folder = run / "checkpoints"
    found = [p for p in _children(folder) if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]

    def step(p: Path) -> int:
        tail = p.name[len(CHECKPOINT_PREFIX) :]
        return int(tail) if tail.isdigit() else -1

    return sorted(found, key=step)


def _best_checkpoint(checkpoints: list[Path]) -> Path | None:
    """The checkpoint the Trainer recorded as best (``best_model_checkpoint`` in trainer_state.json), if any."""
    for checkpoint in reversed(checkpoints):
        try:
            state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        best = state.get("best_model_checkpoint")
        if isinstance(best, str) and best:
            return Path(best)
    return None


def _job(db: Database, job_id: str) -> Job:
    with db.session() as s:
        job = s.get(Job, job_id.strip())
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found", param="job_id")
    return job


def plan_checkpoints(settings: Settings, db: Database, job_id: str, *, keep: str = "last_best") -> CleanupPlan:
    """Old checkpoints of a run. ``keep="last_best"``: all but the newest and the best. ``keep="none"``: every
    checkpoint, once the job succeeded and its result (the artifact, or an export of it) is saved; a job that could
    still be resumed keeps the checkpoint it would resume from."""
    if keep not in ("last_best", "none"):
        raise ValidationError(f"keep must be last_best or none; got {keep!r}", param="keep")
    job = _job(db, job_id)
    check_owner(f"job {job.id}", job.owner_id, db)
    run = settings.home / "runs" / job.id
    checkpoints = _checkpoints(run)
    action = "checkpoints" if keep == "last_best" else "checkpoints-all"
    if not checkpoints:
        return CleanupPlan(action, job.id, kept=["no checkpoints"])
    kept: dict[Path, str] = {}
    if job.state in ("queued", "running"):
        return CleanupPlan(action, job.id, kept=[f"all {len(checkpoints)} checkpoints: the job is {job.state}"])
    resume = Path(job.checkpoint_path).resolve() if job.checkpoint_path else None
    if keep == "last_best":
        kept[checkpoints[-1]] = "the newest"
        best = _best_checkpoint(checkpoints)
        if best is not None:
            for c in checkpoints:
                if c.resolve() == best.resolve() or c.name == best.name:
                    kept[c] = "the best (trainer_state.json)"
    else:
        artifact = Path(job.artifact_path) if job.artifact_path else None
        if job.state != "succeeded" or artifact is None or not artifact.exists():
            for c in checkpoints:
                if resume is not None and c.resolve() == resume:
                    kept[c] = f"the job ({job.state}) would resume from it: export or finish it first"
            if not kept:
                kept[checkpoints[-1]] = f"the job ({job.state}) has no saved result yet"
    for c in checkpoints:
        if resume is not None and c.resolve() == resume and c not in kept and job.state != "succeeded":
            kept[c] = "the job would resume from it"
    paths = [c for c in checkpoints if c not in kept]
    return CleanupPlan(
        action,
        job.id,
        paths=[p.relative_to(settings.home).as_posix() for p in paths],
        bytes=sum(tree_bytes(p) for p in paths),
        kept=[f"{c.name}: {why}" for c, why in kept.items()],
    )


def _references(db: Database, dataset: Dataset) -> dict[str, list[str]]:
    """Version id -> the jobs whose config names that version (by number or content hash) of ``dataset``."""
    with db.session() as s:
        versions = s.exec(select(DatasetVersion).where(col(DatasetVersion.dataset_id) == dataset.id)).all()
        jobs = s.exec(select(Job)).all()
    out: dict[str, list[str]] = {v.id: [] for v in versions}
    for job in jobs:
        cfg = job.config or {}
        if cfg.get("dataset") != dataset.name:
            continue
        for v in versions:
            if cfg.get("dataset_hash") == v.content_hash or cfg.get("dataset_version") == v.number:
                out[v.id].append(job.id)
    return out


def plan_dataset_versions(settings: Settings, db: Database, name: str) -> CleanupPlan:
    """Versions of a dataset that no job names and that are not its latest: their files and rows."""
    with db.session() as s:
        dataset = s.exec(select(Dataset).where(col(Dataset.name) == name.strip())).first()
        if dataset is None:
            raise NotFoundError(f"dataset {name!r} not found", param="dataset")
        versions = list(
            s.exec(
                select(DatasetVersion)
                .where(col(DatasetVersion.dataset_id) == dataset.id)
                .order_by(col(DatasetVersion.number))
            ).all()
        )
    check_owner(f"dataset {name!r}", dataset.owner_id, db)
    refs = _references(db, dataset)
    kept: list[str] = []
    gone: list[DatasetVersion] = []
    for v in versions:
        if v.id == dataset.latest_version_id:
            kept.append(f"v{v.number}: the latest version")
        elif refs.get(v.id):
            jobs = ", ".join(refs[v.id][:3]) + (" …" if len(refs[v.id]) > 3 else "")
            kept.append(f"v{v.number}: used by job {jobs}")
        else:
            gone.append(v)
    paths = [settings.home / v.path for v in gone]
    return CleanupPlan(
        "dataset-versions",
        name,
        paths=[v.path for v in gone],
        bytes=sum(tree_bytes(p) for p in paths),
        kept=kept,
        version_ids=[v.id for v in gone],
    )


def make_plan(settings: Settings, db: Database, action: str, target: str) -> CleanupPlan:
    """The plan of ``action`` (checkpoints | checkpoints-all | dataset-versions) for ``target``."""
    if action == "checkpoints":
        return plan_checkpoints(settings, db, target, keep="last_best")
    if action == "checkpoints-all":
        return plan_checkpoints(settings, db, target, keep="none")
    if action == "dataset-versions":
        return plan_dataset_versions(settings, db, target)
    raise ValidationError(
        f"action must be checkpoints, checkpoints-all or dataset-versions; got {action!r}", param="action"
    )


def apply_plan(settings: Settings, db: Database, shown: CleanupPlan) -> int:
    """Delete what ``shown`` announced, if planning again gives the same plan (else ConflictError); the bytes freed."""
    now = make_plan(settings, db, shown.action, shown.target)
    if (now.paths, now.version_ids) != (shown.paths, shown.version_ids):
        raise ConflictError(
            f"what the clean-up of {shown.target} would delete changed since it was shown; preview it again",
            param="action",
        )
    home = settings.home.resolve()
    freed = 0
    if now.version_ids:
        with db.session() as s:  # rows first: a failed delete leaves files nobody names, never rows without files
            for vid in now.version_ids:
                row = s.get(DatasetVersion, vid)
                if row is not None:
                    s.delete(row)
    for raw in now.paths:
        path = settings.home / raw
        if not path.resolve().is_relative_to(home):  # never outside STUDIO_HOME, whatever a row says
            raise ConflictError(f"refusing to delete {path}: it is not under STUDIO_HOME", param="action")
        size = tree_bytes(path)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        freed += size
    return freed
