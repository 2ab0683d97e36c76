"""The job queue on SQLite: submit, atomic claim (order, schedule, one job per device), transitions, recovery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import update

from studio.db import Database
from studio.errors import BackendUnavailableError, ConflictError, NotFoundError, ValidationError
from studio.jobs import kinds, queue
from studio.jobs.kinds import JobKind, get_kind, register_kind
from studio.jobs.queue import JOB, Lease
from studio.settings import Settings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    yield database
    database.dispose()


def _selftest(db: Database, **kwargs: object) -> str:
    return queue.submit(db, "selftest", {"steps": 3}, **kwargs).id  # type: ignore[arg-type]


def _set(db: Database, job_id: str, **values: object) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(JOB).where(JOB.c.id == job_id).values(**values))


# --- kinds --------------------------------------------------------------------------------------------------


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValidationError) as err:
        get_kind("finetuen")
    assert "unknown job kind 'finetuen'" in str(err.value)
    assert "finetune" in str(err.value) and "selftest" in str(err.value)


def test_kind_whose_module_is_missing_says_which_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kinds.KIND_MODULES, "ghost", "studio.no_such_module_for_jobs")
    with pytest.raises(BackendUnavailableError) as err:
        get_kind("ghost")
    assert "studio.no_such_module_for_jobs" in str(err.value) and "ModuleNotFoundError" in str(err.value)


class _EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def test_registered_kind_validates_its_config(db: Database) -> None:
    register_kind(JobKind("unit-echo", _EchoConfig, lambda cfg, rt: {"echo": cfg.text}, "echo"))
    job = queue.submit(db, "unit-echo", {"text": "hi"})
    assert queue.get_job(db, job.id).config == {"text": "hi"}
    with pytest.raises(ValidationError) as err:
        queue.submit(db, "unit-echo", {"text": "hi", "colour": "red"})
    assert "colour" in str(err.value) and err.value.param == "colour"


# --- submit -------------------------------------------------------------------------------------------------


class _ScheduledConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    priority: int = 0
    not_before: datetime | None = None


def test_schedule_fields_of_a_config_fill_the_row_and_arguments_win(db: Database) -> None:
    register_kind(JobKind("unit-scheduled", _ScheduledConfig, lambda cfg, rt: {}, "has a schedule"))
    when = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = queue.submit(db, "unit-scheduled", {"name": "nightly", "priority": 7, "not_before": when.isoformat()})
    assert (job.name, job.priority, job.not_before) == ("nightly", 7, when)
    assert queue.claim_next(db, "w:1") is None  # scheduled for 2031
    over = queue.submit(db, "unit-scheduled", {"name": "nightly", "priority": 7}, name="now", priority=-1)
    assert (over.name, over.priority, over.not_before) == ("now", -1, None)
    assert (over.config["name"], over.config["priority"]) == ("now", -1)  # the stored config agrees with the row


def test_submit_stores_the_validated_config_with_defaults(db: Database) -> None:
    job = queue.submit(db, "selftest", {"steps": 7}, name="demo", priority=2)
    stored = queue.get_job(db, job.id)
    assert stored.state == "queued" and stored.name == "demo" and stored.priority == 2
    assert stored.config == {
        "steps": 7,
        "sleep_s": 0.1,
        "checkpoint_every": 5,
        "fail_at_step": None,
        "helper_process": False,
    }
    assert stored.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("config", "needle"),
    [({"steps": 0}, "steps: Input should be greater than or equal to 1"), ({"stepz": 3}, "stepz")],
)
def test_submit_rejects_bad_configs_and_stores_nothing(db: Database, config: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        queue.submit(db, "selftest", config)
    assert needle in str(err.value)
    assert queue.list_jobs(db) == []


def test_get_job_by_prefix_and_unknown_id(db: Database) -> None:
    job_id = _selftest(db)
    assert queue.get_job(db, job_id[:8]).id == job_id
    with pytest.raises(NotFoundError, match="job 'nope' not found"):
        queue.get_job(db, "nope")


# --- claim --------------------------------------------------------------------------------------------------


def test_claim_takes_highest_priority_then_oldest(db: Database) -> None:
    low = _selftest(db, priority=0)
    high_old = _selftest(db, priority=5)
    high_new = _selftest(db, priority=5)
    order = []
    for _ in range(3):
        job = queue.claim_next(db, "w:1")
        assert job is not None and job.state == "running" and job.worker_id == "w:1"
        order.append(job.id)
        assert queue.finish(db, Lease.of(job), "succeeded")
    assert order == [high_old, high_new, low]
    assert queue.claim_next(db, "w:1") is None


def test_claim_respects_not_before(db: Database) -> None:
    now = datetime.now(UTC)
    later = _selftest(db, not_before=now + timedelta(hours=1))
    assert queue.claim_next(db, "w:1", now=now) is None
    job = queue.claim_next(db, "w:1", now=now + timedelta(hours=1, seconds=1))
    assert job is not None and job.id == later


def test_not_before_in_another_time_zone_is_compared_in_utc(db: Database) -> None:
    tz = datetime.now(UTC).astimezone(timezone(timedelta(hours=-8)))
    job_id = _selftest(db, not_before=tz + timedelta(minutes=30))
    assert queue.get_job(db, job_id).not_before == (tz + timedelta(minutes=30)).astimezone(UTC)
    assert queue.claim_next(db, "w:1", now=datetime.now(UTC) + timedelta(minutes=29)) is None
    assert queue.claim_next(db, "w:1", now=datetime.now(UTC) + timedelta(minutes=31)) is not None


def test_one_running_job_per_device(db: Database) -> None:
    first = _selftest(db)
    _selftest(db)
    gpu = _selftest(db, device="cuda:0")
    running = queue.claim_next(db, "w:1")
    assert running is not None and running.id == first
    assert queue.claim_next(db, "w:2") is None  # cpu busy, even for another worker
    other = queue.claim_next(db, "w:2", device="cuda:0")
    assert other is not None and other.id == gpu
    queue.finish(db, Lease.of(running), "succeeded")
    assert queue.claim_next(db, "w:2") is not None


def test_concurrent_claims_on_sqlite_never_share_a_job_or_a_device(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    setup = Database(url)
    devices = [f"d{i}" for i in range(4)]
    for i in range(24):
        queue.submit(setup, "selftest", {"steps": 1}, device=devices[i % 4])
    claimed: list[tuple[str, str]] = []
    overlap: list[str] = []
    lock = threading.Lock()

    def work(worker: str) -> None:
        db = Database(url)  # each worker its own engine and connections, as separate processes would have
        try:
            idle = 0
            while idle < 30:
                got = False
                for device in devices:
                    job = queue.claim_next(db, worker, device=device)
                    if job is None:
                        continue
                    got = True
                    with lock:
                        claimed.append((job.id, worker))
                    running = queue.list_jobs(db, state="running")
                    if sum(1 for j in running if j.device == device) > 1:
                        overlap.append(device)
                    queue.finish(db, Lease.of(job), "succeeded")
                idle = 0 if got else idle + 1
        finally:
            db.dispose()

    threads = [threading.Thread(target=work, args=(f"w:{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [c[0] for c in claimed]
    assert len(ids) == 24 and len(set(ids)) == 24
    assert overlap == []
    setup.dispose()


# --- transitions --------------------------------------------------------------------------------------------


def test_cancel_queued_is_immediate_and_running_sets_the_flag(db: Database) -> None:
    queued = _selftest(db, device="other")
    assert queue.request_cancel(db, queued).state == "cancelled"
    running_id = _selftest(db)
    running = queue.claim_next(db, "w:1")
    assert running is not None and running.id == running_id
    after = queue.request_cancel(db, running_id)
    assert after.state == "running" and after.cancel_requested
    assert queue.check_lease(db, Lease.of(running)) == "cancel_requested"
    with pytest.raises(ConflictError, match="already ended"):
        queue.request_cancel(db, queued)


def test_cancel_is_offered_while_there_is_something_to_stop(db: Database) -> None:
    """Issue 15, point 10: a UI enables Cancel only for a queued job or a running one not yet asked to stop."""
    queued = _selftest(db, device="other")
    assert queue.can_cancel(queue.get_job(db, queued))
    assert not queue.can_cancel(queue.request_cancel(db, queued))  # cancelled
    running_id = _selftest(db)
    running = queue.claim_next(db, "w:1")
    assert running is not None and running.id == running_id and queue.can_cancel(running)
    assert not queue.can_cancel(queue.request_cancel(db, running_id))  # asked to stop: nothing more to do


def test_a_stale_lease_cannot_write(db: Database) -> None:
    _selftest(db)
    job = queue.claim_next(db, "w:1")
    assert job is not None
    wrong = Lease(job.id, "w:2", job.attempts)
    assert not queue.record_progress(db, wrong, step=3)
    assert not queue.finish(db, wrong, "succeeded")
    assert queue.check_lease(db, wrong) == "lost"
    assert queue.finish(db, Lease.of(job), "failed", message="boom")
    assert not queue.finish(db, Lease.of(job), "succeeded")  # a final state is final
    assert queue.get_job(db, job.id).message == "boom"


def test_a_metric_recorded_again_at_a_step_replaces_the_earlier_value_and_keeps_the_others(db: Database) -> None:
    _selftest(db)
    job = queue.claim_next(db, "w:1")
    assert job is not None
    lease = Lease.of(job)
    queue.add_metric(db, lease, 4, 0.4, {"train_loss": 2.0, "learning_rate": 1e-4})
    queue.add_metric(db, lease, 4, 0.4, {"eval_loss": 2.5})  # an evaluation at the same step: a second point
    queue.add_metric(db, lease, 5, 0.5, {"train_loss": 1.8})
    queue.add_metric(db, lease, 4, 0.4, {"train_loss": 1.9})  # step 4 ran again after a resume
    points = {(p.step, name): value for p in queue.job_metrics(db, job.id) for name, value in p.values.items()}
    assert points == {
        (4, "learning_rate"): 1e-4,
        (4, "eval_loss"): 2.5,
        (4, "train_loss"): 1.9,
        (5, "train_loss"): 1.8,
    }
    assert len([p for p in queue.job_metrics(db, job.id) for _ in p.values]) == 4


def test_resume_needs_a_checkpoint_except_after_interruption(db: Database, tmp_path: Path) -> None:
    _selftest(db)
    job = queue.claim_next(db, "w:1")
    assert job is not None
    queue.finish(db, Lease.of(job), "failed", message="boom")
    with pytest.raises(ConflictError, match="no checkpoint"):
        queue.resume(db, job.id)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    _set(db, job.id, checkpoint_path=str(checkpoint))
    resumed = queue.resume(db, job.id)
    assert resumed.state == "queued" and resumed.attempts == 1 and resumed.checkpoint_path == str(checkpoint)
    with pytest.raises(ConflictError, match="only interrupted, cancelled or failed"):
        queue.resume(db, job.id)
    again = queue.claim_next(db, "w:1")
    assert again is not None and Lease.of(again).attempt == 1
    queue.finish(db, Lease.of(again), "succeeded")
    with pytest.raises(ConflictError):
        queue.resume(db, job.id)


# --- recovery -----------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_marks_jobs_of_a_dead_local_worker_interrupted(db: Database) -> None:
    import socket

    _selftest(db)
    _selftest(db, device="gpu")
    dead = queue.claim_next(db, f"{socket.gethostname()}:{_dead_pid()}")
    alive = queue.claim_next(db, f"{socket.gethostname()}:{os.getpid()}", device="gpu")
    assert dead is not None and alive is not None
    recovered = queue.recover_orphans(db)
    assert [j.id for j in recovered] == [dead.id]
    row = queue.get_job(db, dead.id)
    assert row.state == "interrupted" and "is gone" in row.message and "resume" in row.message
    assert queue.get_job(db, alive.id).state == "running"


def test_recover_marks_stale_heartbeats_interrupted_on_any_host(db: Database) -> None:
    _selftest(db)
    job = queue.claim_next(db, "elsewhere:123")
    assert job is not None
    assert queue.recover_orphans(db, stale_after_s=60) == []
    later = datetime.now(UTC) + timedelta(seconds=90)
    [recovered] = queue.recover_orphans(db, stale_after_s=60, now=later)
    assert recovered.state == "interrupted" and "no heartbeat from worker elsewhere:123" in recovered.message
    # interrupted without a checkpoint may be resumed: it starts over
    assert queue.resume(db, job.id).message.startswith("queued again")


def test_recover_ends_an_orphan_that_was_being_cancelled_as_cancelled(db: Database) -> None:
    _selftest(db)
    job = queue.claim_next(db, "elsewhere:123")
    assert job is not None
    queue.request_cancel(db, job.id)
    [recovered] = queue.recover_orphans(db, stale_after_s=60, now=datetime.now(UTC) + timedelta(seconds=90))
    assert recovered.state == "cancelled"
    assert recovered.message.startswith("cancelled: no heartbeat from worker elsewhere:123 for ")
    assert "resume" not in recovered.message


def test_log_tail_reads_the_last_lines(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    path = queue.log_path(settings, "j1")
    assert queue.log_tail(settings, "j1") == ""
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert queue.log_tail(settings, "j1", n=3) == "line 4997\nline 4998\nline 4999"
