"""Disk usage and clean-ups (issue 20, point 3) on a real STUDIO_HOME and database: sizes per model, adapter, export,
dataset and run, largest first; clean-ups that announce exactly what they free, keep what a job still needs (with
the reason), refuse a plan that changed since it was shown, and respect owners."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import select

from studio.auth import Principal
from studio.datasets.store import DatasetStore
from studio.db import Database
from studio.db.tables import DatasetVersion, Job
from studio.errors import ConflictError, ForbiddenError
from studio.jobs import queue
from studio.jobs.queue import JOB
from studio.monitoring.disk import apply_plan, disk_usage, make_plan, tree_bytes
from studio.settings import Settings
from studio.users.acting import acting_as


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Settings, Database, DatasetStore]]:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    db = Database(f"sqlite:///{tmp_path / 'disk.db'}")
    yield settings, db, DatasetStore(settings, db)
    db.dispose()


def _file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def _qa(n: int, tag: str) -> bytes:
    return "".join(json.dumps({"prompt": f"{tag} Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(n)).encode()


def _job(db: Database, **values: object) -> str:
    job_id = queue.submit(db, "selftest", {"steps": 1}).id
    with db.engine.begin() as conn:
        conn.execute(update(JOB).where(JOB.c.id == job_id).values(**values))
    return job_id


def _run_with_checkpoints(settings: Settings, job_id: str, best: int | None) -> dict[int, int]:
    sizes = {10: 1000, 20: 2000, 30: 3000}
    for step, size in sizes.items():
        folder = settings.home / "runs" / job_id / "checkpoints" / f"checkpoint-{step}"
        _file(folder / "adapter_model.safetensors", size)
        state = {"best_model_checkpoint": str(folder.parent / f"checkpoint-{best}") if best else None}
        (folder / "trainer_state.json").write_text(json.dumps(state))
    return {step: tree_bytes(settings.home / "runs" / job_id / "checkpoints" / f"checkpoint-{step}") for step in sizes}


def test_usage_lists_everything_largest_first(home) -> None:  # type: ignore[no-untyped-def]
    settings, db, store = home
    _file(settings.home / "models" / "tiny" / "model.safetensors", 50_000)
    _file(settings.home / "adapters" / "lora-a" / "adapter_model.safetensors", 7_000)
    _file(settings.home / "exports" / "tiny-gguf" / "model.gguf", 20_000)
    store.import_upload("faq", _qa(12, "a"), "faq.jsonl")
    store.import_upload("faq", _qa(14, "b"), "faq.jsonl")
    job_id = _job(db, state="failed")
    _file(settings.home / "runs" / job_id / "log.txt", 300)
    report = disk_usage(settings, db)
    by_name = {(i.kind, i.name): i for i in report.items}
    assert by_name[("model", "tiny")].bytes == 50_000
    assert by_name[("adapter", "lora-a")].bytes == 7_000
    assert by_name[("export", "tiny-gguf")].bytes == 20_000
    assert by_name[("dataset", "faq")].detail == "2 versions" and by_name[("dataset", "faq")].bytes > 0
    assert by_name[("run", job_id)].bytes == 300 and "failed" in by_name[("run", job_id)].detail
    assert [i.bytes for i in report.items] == sorted((i.bytes for i in report.items), reverse=True)
    assert report.free_bytes > 0 and report.volume_bytes >= report.free_bytes


def test_old_checkpoints_go_the_newest_and_best_stay(home) -> None:  # type: ignore[no-untyped-def]
    settings, db, _store = home
    job_id = _job(db, state="succeeded")
    sizes = _run_with_checkpoints(settings, job_id, best=20)
    plan = make_plan(settings, db, "checkpoints", job_id)
    assert [Path(p).name for p in plan.paths] == ["checkpoint-10"] and plan.bytes == sizes[10]
    assert any("checkpoint-20: the best" in k for k in plan.kept) and any(
        "checkpoint-30: the newest" in k for k in plan.kept
    )
    before = tree_bytes(settings.home / "runs" / job_id)
    assert apply_plan(settings, db, plan) == plan.bytes
    assert tree_bytes(settings.home / "runs" / job_id) == before - plan.bytes  # exactly what it announced
    assert make_plan(settings, db, "checkpoints", job_id).paths == []


def test_a_resumable_job_keeps_its_checkpoint(home) -> None:  # type: ignore[no-untyped-def]
    settings, db, _store = home
    job_id = _job(db, state="failed")
    _run_with_checkpoints(settings, job_id, best=None)
    resume = settings.home / "runs" / job_id / "checkpoints" / "checkpoint-30"
    with db.engine.begin() as conn:
        conn.execute(update(JOB).where(JOB.c.id == job_id).values(checkpoint_path=str(resume)))
    plan = make_plan(settings, db, "checkpoints-all", job_id)
    assert resume.relative_to(settings.home).as_posix() not in plan.paths and len(plan.paths) == 2
    assert any("resume" in k for k in plan.kept)
    running = _job(db, state="running")
    _run_with_checkpoints(settings, running, best=None)
    assert make_plan(settings, db, "checkpoints-all", running).paths == []


def test_unused_dataset_versions_go_referenced_ones_stay(home) -> None:  # type: ignore[no-untyped-def]
    settings, db, store = home
    v1 = store.import_upload("faq", _qa(12, "one"), "faq.jsonl").version
    v2 = store.import_upload("faq", _qa(13, "two"), "faq.jsonl").version
    v3 = store.import_upload("faq", _qa(14, "three"), "faq.jsonl").version
    user = _job(db, state="succeeded")
    with db.engine.begin() as conn:
        conn.execute(
            update(JOB).where(JOB.c.id == user).values(config={"dataset": "faq", "dataset_version": v1.number})
        )
    plan = make_plan(settings, db, "dataset-versions", "faq")
    assert plan.version_ids == [v2.id] and plan.bytes == v2.size_bytes
    assert f"v1: used by job {user}" in plan.kept and "v3: the latest version" in plan.kept
    _file(settings.home / "datasets" / "other.bin", 10)  # unrelated files stay
    assert apply_plan(settings, db, plan) == v2.size_bytes
    with db.session() as s:
        assert {v.number for v in s.exec(select(DatasetVersion)).all()} == {1, 3}
    assert not (settings.home / v2.path).exists() and (settings.home / v1.path).exists()
    assert v3.number == 3


def test_a_plan_that_changed_is_refused(home) -> None:  # type: ignore[no-untyped-def]
    settings, db, _store = home
    job_id = _job(db, state="succeeded")
    _run_with_checkpoints(settings, job_id, best=None)
    plan = make_plan(settings, db, "checkpoints", job_id)
    _file(settings.home / "runs" / job_id / "checkpoints" / "checkpoint-40" / "adapter_model.safetensors", 10)
    with pytest.raises(ConflictError, match="preview it again"):
        apply_plan(settings, db, plan)
    assert all((settings.home / p).exists() for p in plan.paths)  # nothing deleted


def test_members_clean_up_only_their_own(home) -> None:  # type: ignore[no-untyped-def]
    settings, db, _store = home
    bob = Principal("bob", "session", role="member", user_id="u-bob")
    cy = Principal("cy", "session", role="member", user_id="u-cy")
    with acting_as(bob):
        job_id = queue.submit(db, "selftest", {"steps": 1}).id
    with db.session() as s:
        row = s.get(Job, job_id)
        assert row is not None and row.owner_id == "u-bob"
    with acting_as(cy), pytest.raises(ForbiddenError):
        make_plan(settings, db, "checkpoints", job_id)
    with acting_as(bob):
        assert make_plan(settings, db, "checkpoints", job_id).kept
