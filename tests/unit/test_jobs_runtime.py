"""JobRuntime and the job body run in-process: progress, metrics, log, cancel, failure, resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.db import Database
from studio.jobs import queue
from studio.jobs.child import run_job
from studio.jobs.queue import Lease
from studio.jobs.runtime import JobRuntime
from studio.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home")
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


def _claim(db: Database, config: dict[str, object]) -> Lease:
    queue.submit(db, "selftest", config)
    job = queue.claim_next(db, "test:1")
    assert job is not None
    return Lease.of(job)


def test_runtime_writes_progress_metrics_log_and_checkpoint(settings: Settings, db: Database) -> None:
    lease = _claim(db, {"steps": 10})
    runtime = JobRuntime(settings, db, queue.get_job(db, lease.job_id), lease)
    runtime.progress(0, 10)
    runtime.progress(4, 10, epoch=0.4, message="step 4/10")
    runtime.metrics(4, 0.4, {"train_loss": 1.5, "learning_rate": 1e-4})
    runtime.log("hello\nworld")
    runtime.checkpoint_saved(runtime.run_dir / "checkpoint-4")
    job = queue.get_job(db, lease.job_id)
    assert (job.step, job.total_steps, job.progress, job.epoch, job.message) == (4, 10, 0.4, 0.4, "step 4/10")
    assert job.eta_s is not None and job.eta_s >= 0  # measured from the two progress calls
    assert job.checkpoint_path == str(settings.home / "runs" / job.id / "checkpoint-4")
    [point] = queue.job_metrics(db, job.id)
    assert (point.step, point.values) == (4, {"train_loss": 1.5, "learning_rate": 1e-4})
    tail = queue.log_tail(settings, job.id).splitlines()
    assert tail[0].endswith(" hello") and tail[1].endswith(" world") and "checkpoint saved" in tail[2]
    assert not runtime.should_stop()


def test_should_stop_follows_cancel_and_a_lost_lease(settings: Settings, db: Database) -> None:
    lease = _claim(db, {"steps": 10})
    runtime = JobRuntime(settings, db, queue.get_job(db, lease.job_id), lease)
    assert not runtime.should_stop()
    queue.request_cancel(db, lease.job_id)
    assert not runtime.should_stop()  # read at most once a second
    runtime._last_check = 0.0
    assert runtime.should_stop() and runtime.stop_reason == "cancel"

    other = Lease(lease.job_id, "someone-else:2", lease.attempt)
    lost = JobRuntime(settings, db, queue.get_job(db, lease.job_id), other)
    lost.progress(1, 10)
    assert lost.should_stop() and lost.stop_reason == "lost"


def test_run_job_succeeds(settings: Settings, db: Database) -> None:
    lease = _claim(db, {"steps": 3, "sleep_s": 0.0, "checkpoint_every": 2})
    assert run_job(settings, db, lease) == "succeeded"
    job = queue.get_job(db, lease.job_id)
    assert job.state == "succeeded" and job.step == 3 and job.progress == 1.0
    assert job.result == {"steps_done": 3, "stopped": False}
    assert [p.step for p in queue.job_metrics(db, job.id)] == [1, 2, 3]
    assert job.checkpoint_path is not None and job.checkpoint_path.endswith("checkpoint-3")


def test_run_job_failure_keeps_the_last_line_as_message_and_traceback_in_log(settings: Settings, db: Database) -> None:
    lease = _claim(db, {"steps": 5, "sleep_s": 0.0, "fail_at_step": 2})
    assert run_job(settings, db, lease) == "failed"
    job = queue.get_job(db, lease.job_id)
    assert job.message == "RuntimeError: selftest failed at step 2 as configured (fail_at_step)"
    log_text = queue.log_path(settings, job.id).read_text()
    assert "Traceback (most recent call last)" in log_text and "run_selftest" in log_text


def test_cancel_stops_at_the_next_step_and_resume_continues_from_the_checkpoint(
    settings: Settings, db: Database
) -> None:
    lease = _claim(db, {"steps": 6, "sleep_s": 0.0, "checkpoint_every": 4})
    queue.request_cancel(db, lease.job_id)  # already requested before the first step
    assert run_job(settings, db, lease) == "cancelled"
    job = queue.get_job(db, lease.job_id)
    assert job.state == "cancelled" and job.step == 1 and job.checkpoint_path is not None
    assert job.message == f"cancelled at step 1; checkpoint {job.checkpoint_path}"

    queue.resume(db, job.id)
    again = queue.claim_next(db, "test:1")
    assert again is not None
    assert run_job(settings, db, Lease.of(again)) == "succeeded"
    done = queue.get_job(db, job.id)
    assert done.attempts == 1 and done.step == 6
    steps = [p.step for p in queue.job_metrics(db, job.id)]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 2-6 in the second attempt: it went on from step 1
    assert "resuming from" in queue.log_tail(settings, job.id, n=100)


def test_a_job_taken_away_is_not_started(settings: Settings, db: Database) -> None:
    lease = _claim(db, {"steps": 2, "sleep_s": 0.0})
    assert run_job(settings, db, Lease(lease.job_id, "other:9", lease.attempt)) == "lost"
    assert queue.get_job(db, lease.job_id).state == "running"
