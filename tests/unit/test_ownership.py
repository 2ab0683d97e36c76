"""Who owns jobs and datasets once a team signs in (issue 19, points 3 and 4): the submitter owns a job and the
importer a dataset; the team sees them read-only unless private; only the owner or an admin changes them; the
queued-jobs and GPU-hours quotas refuse with a message naming the quota. Real SQLite database, real service calls,
acting as each user through ``studio.users.acting.acting_as``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from studio.auth import Principal
from studio.datasets.store import DatasetStore
from studio.db import Database
from studio.errors import ForbiddenError, NotFoundError, RateLimitError
from studio.jobs import queue
from studio.jobs.queue import JOB
from studio.settings import Settings
from studio.users.acting import acting_as
from studio.users.service import UserService


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[Database, DatasetStore, dict[str, Principal], UserService]]:
    db = Database(f"sqlite:///{tmp_path / 'team.db'}")
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    users = UserService(settings, db)
    who: dict[str, Principal] = {}
    for name, role in (("ada", "admin"), ("bob", "member"), ("cy", "member"), ("vic", "viewer")):
        info = users.add(name, role=role, password=f"{name}-password")
        who[name] = Principal(name, "session", role=role, user_id=info.id)
    yield db, DatasetStore(settings, db), who, users
    db.dispose()


def _qa(n: int) -> bytes:
    return "".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(n)).encode()


def test_jobs_belong_to_their_submitter(team) -> None:  # type: ignore[no-untyped-def]
    db, _store, who, _users = team
    with acting_as(who["bob"]):
        shared = queue.submit(db, "selftest", {"steps": 1})
        hidden = queue.submit(db, "selftest", {"steps": 1}, private=True)
    assert shared.owner_id == who["bob"].user_id and hidden.private
    with acting_as(who["cy"]):
        listed = {j.id for j in queue.list_jobs(db)}
        assert shared.id in listed and hidden.id not in listed  # shared read-only; private hidden
        with pytest.raises(NotFoundError):
            queue.get_job(db, hidden.id)
        with pytest.raises(ForbiddenError) as refused:
            queue.request_cancel(db, shared.id)
        assert "belongs to bob" in str(refused.value)
    with acting_as(who["bob"]):
        assert queue.request_cancel(db, shared.id).state == "cancelled"
        assert hidden.id in {j.id for j in queue.list_jobs(db)}
    with acting_as(who["ada"]):  # admins see and change everything
        assert hidden.id in {j.id for j in queue.list_jobs(db)}
        assert queue.request_cancel(db, hidden.id).state == "cancelled"
    assert {j.id for j in queue.list_jobs(db)} >= {shared.id, hidden.id}  # the CLI / single user: everything


def test_datasets_belong_to_their_importer(team) -> None:  # type: ignore[no-untyped-def]
    _db, store, who, _users = team
    with acting_as(who["bob"]):
        store.import_upload("bobs-faq", _qa(12), "faq.jsonl")
        store.import_upload("bobs-secret", _qa(10), "s.jsonl")
        store.set_private("bobs-secret", True)
    with acting_as(who["cy"]):
        cards = {c.name: c for c in store.list_cards()}
        assert cards["bobs-faq"].owner == "bob" and "bobs-secret" not in cards
        assert "bobs-secret" not in store.names()
        with pytest.raises(NotFoundError):
            store.get("bobs-secret")
        before = sorted(p for p in store.root.rglob("*") if p.is_file())
        with pytest.raises(ForbiddenError):  # a new version would change bob's dataset
            store.import_upload("bobs-faq", _qa(15), "faq.jsonl")
        assert sorted(p for p in store.root.rglob("*") if p.is_file()) == before  # no file left behind
        with pytest.raises(ForbiddenError):
            store.delete("bobs-faq")
        store.import_upload("cys-faq", _qa(11), "c.jsonl")
        store.delete("cys-faq")
    with acting_as(who["ada"]):
        assert "bobs-secret" in store.names()
        store.delete("bobs-secret")


def test_queued_jobs_quota_names_the_quota(team) -> None:  # type: ignore[no-untyped-def]
    db, _store, who, users = team
    users.set_quotas("bob", {"queued_jobs": 2})
    with acting_as(who["bob"]):
        queue.submit(db, "selftest", {"steps": 1})
        queue.submit(db, "selftest", {"steps": 1})
        with pytest.raises(RateLimitError) as over:
            queue.submit(db, "selftest", {"steps": 1})
    assert "queued_jobs" in str(over.value) and "(2)" in str(over.value)
    with acting_as(who["cy"]):  # the member default (8) is cy's own
        queue.submit(db, "selftest", {"steps": 1})


def test_gpu_hours_per_day_counts_todays_gpu_jobs(team) -> None:  # type: ignore[no-untyped-def]
    db, _store, who, users = team
    users.set_quotas("bob", {"gpu_hours_per_day": 1})
    with acting_as(who["bob"]):
        ran = queue.submit(db, "selftest", {"steps": 1}, device="cuda:0")
        now = datetime.now(UTC)
        started = max(now - timedelta(minutes=90), now.replace(hour=0, minute=0, second=0, microsecond=0))
        with db.engine.begin() as conn:  # it ran on the GPU for up to 90 minutes today
            conn.execute(
                update(JOB).where(JOB.c.id == ran.id).values(state="succeeded", started_at=started, finished_at=now)
            )
        used_h = (now - started).total_seconds() / 3600
        if used_h >= 1:
            with pytest.raises(RateLimitError) as over:
                queue.submit(db, "selftest", {"steps": 1}, device="cuda:0")
            assert "gpu_hours_per_day" in str(over.value)
        queue.submit(db, "selftest", {"steps": 1}, device="cpu")  # CPU jobs do not count
    with acting_as(who["vic"]), pytest.raises(RateLimitError):  # a viewer's default quotas: no jobs at all
        queue.submit(db, "selftest", {"steps": 1})
