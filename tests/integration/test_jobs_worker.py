"""The worker with real job processes: success, cancel (cooperative and forced), kill -9 of the job process and of
the worker, resume from a checkpoint, graceful shutdown. Jobs are ``selftest`` jobs (no model)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from studio.db import Database
from studio.db.tables import Job
from studio.jobs import queue
from studio.jobs.procs import child_env
from studio.jobs.queue import pid_alive
from studio.jobs.worker import Worker, WorkerOptions, start_background_worker
from studio.settings import Settings

FAST = WorkerOptions(poll_s=0.1, heartbeat_s=0.5, cancel_grace_s=10.0, kill_after_s=1.0, watch_s=0.05)


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


class ThreadWorker:
    """A Worker looping in a thread of the test process (its jobs still run in their own processes)."""

    def __init__(self, settings: Settings, db: Database, options: WorkerOptions) -> None:
        self.worker = Worker(settings, db, options=options)
        self.thread = threading.Thread(target=self.worker.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def start_worker(settings: Settings, db: Database) -> Iterator[Callable[[WorkerOptions], ThreadWorker]]:
    started: list[ThreadWorker] = []

    def start(options: WorkerOptions = FAST) -> ThreadWorker:
        started.append(ThreadWorker(settings, db, options))
        return started[-1]

    yield start
    for w in started:
        w.stop()


def wait_for(db: Database, job_id: str, check: Callable[[Job], bool], timeout: float = 30.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = queue.get_job(db, job_id)
        if check(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; job is {job.state} at step {job.step}: {job.message}")
        time.sleep(0.05)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.05)


def submit(db: Database, **config: object) -> str:
    return queue.submit(db, "selftest", dict(config)).id


def test_worker_runs_a_job_in_its_own_process(db: Database, start_worker: Callable[..., ThreadWorker]) -> None:
    job_id = submit(db, steps=3, sleep_s=0.05)
    start_worker()
    pids: set[int] = set()

    def seen(job: Job) -> bool:
        if job.pid is not None:
            pids.add(job.pid)
        return job.state == "succeeded"

    job = wait_for(db, job_id, seen)
    assert job.step == 3 and job.pid is None and job.result == {"steps_done": 3, "stopped": False}
    assert len(pids) == 1 and os.getpid() not in pids


def test_cancel_stops_the_job_at_its_next_step_with_a_checkpoint(
    db: Database, start_worker: Callable[..., ThreadWorker]
) -> None:
    job_id = submit(db, steps=100, sleep_s=0.1, checkpoint_every=5)
    start_worker()
    running = wait_for(db, job_id, lambda j: j.step >= 3 and j.pid is not None)
    assert running.pid is not None
    queue.request_cancel(db, job_id)
    job = wait_for(db, job_id, lambda j: j.state != "running", timeout=15)
    assert job.state == "cancelled" and job.step < 100
    assert job.message == f"cancelled at step {job.step}; checkpoint {job.checkpoint_path}"
    assert job.checkpoint_path is not None and Path(job.checkpoint_path, "state.json").is_file()
    wait_gone(running.pid)


def test_cancel_of_a_job_that_does_not_stop_kills_its_processes(
    settings: Settings, db: Database, start_worker: Callable[..., ThreadWorker]
) -> None:
    job_id = submit(db, steps=2, sleep_s=60, helper_process=True)  # one step outlasts the grace period
    start_worker(WorkerOptions(poll_s=0.1, heartbeat_s=0.5, cancel_grace_s=0.5, kill_after_s=0.5, watch_s=0.05))
    running = wait_for(db, job_id, lambda j: j.pid is not None and "helper process" in queue.log_tail(settings, j.id))
    assert running.pid is not None
    match = re.search(r"helper process (\d+)", queue.log_tail(settings, job_id))
    assert match is not None
    helper = int(match.group(1))
    assert pid_alive(helper)
    queue.request_cancel(db, job_id)
    job = wait_for(db, job_id, lambda j: j.state != "running", timeout=15)
    assert job.state == "cancelled"
    expected = "cancelled: the job did not stop within 0.5 s, so its process was killed by signal 9 (SIGKILL)"
    assert job.message == expected
    wait_gone(running.pid, timeout=1)
    wait_gone(helper, timeout=1)  # the process the job started did not survive it either


def test_kill_9_of_the_job_process_fails_it_naming_the_signal_and_resume_continues(
    settings: Settings, db: Database, start_worker: Callable[..., ThreadWorker]
) -> None:
    job_id = submit(db, steps=12, sleep_s=0.1, checkpoint_every=2)
    worker = start_worker()
    running = wait_for(db, job_id, lambda j: j.step >= 3 and j.pid is not None)
    assert running.pid is not None
    os.kill(running.pid, signal.SIGKILL)
    job = wait_for(db, job_id, lambda j: j.state != "running", timeout=15)
    assert job.state == "failed"
    assert job.message.startswith("the job process was killed by signal 9 (SIGKILL) — out of memory")
    assert job.checkpoint_path is not None and job.checkpoint_path in job.message
    assert worker.thread.is_alive()  # the worker survived its job's death

    checkpoint_step = int(job.checkpoint_path.rsplit("-", 1)[1])
    queue.resume(db, job_id)
    done = wait_for(db, job_id, lambda j: j.state in queue.FINAL_STATES and j.attempts == 1)
    assert done.state == "succeeded" and done.step == 12
    tail = queue.log_tail(settings, job_id, n=200)
    assert f"resuming from {job.checkpoint_path} at step {checkpoint_step}" in tail
    steps = [p.step for p in queue.job_metrics(db, job_id)]
    assert steps.count(1) == 1  # not started over
    assert steps[-(12 - checkpoint_step) :] == list(range(checkpoint_step + 1, 13))


def test_resume_after_kill_9_keeps_one_metric_point_per_step(
    db: Database, start_worker: Callable[..., ThreadWorker]
) -> None:
    job_id = submit(db, steps=10, sleep_s=0.3, checkpoint_every=4)
    start_worker()
    running = wait_for(db, job_id, lambda j: j.step >= 6 and j.pid is not None)
    assert running.pid is not None
    os.kill(running.pid, signal.SIGKILL)
    killed = wait_for(db, job_id, lambda j: j.state != "running", timeout=15)
    assert killed.checkpoint_path is not None
    checkpoint_step = int(killed.checkpoint_path.rsplit("-", 1)[1])
    recorded = max(p.step for p in queue.job_metrics(db, job_id))
    assert recorded > checkpoint_step  # some recorded steps run again after the resume

    queue.resume(db, job_id)
    done = wait_for(db, job_id, lambda j: j.state in queue.FINAL_STATES and j.attempts == 1)
    assert done.state == "succeeded"
    points = [(p.step, name) for p in queue.job_metrics(db, job_id) for name in p.values]
    assert points == [(step, "train_loss") for step in range(1, 11)]  # the re-run steps once each


def _worker_process(settings: Settings, db: Database) -> subprocess.Popen[bytes]:
    env = child_env(settings, db.url)
    return subprocess.Popen(
        [sys.executable, "-m", "studio.jobs.cli", "worker", "--poll", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_9_of_the_worker_then_restart_marks_the_job_interrupted_and_resume_continues(
    settings: Settings, db: Database
) -> None:
    job_id = submit(db, steps=30, sleep_s=0.1, checkpoint_every=3)
    proc = _worker_process(settings, db)
    try:
        running = wait_for(db, job_id, lambda j: j.step >= 4 and j.pid is not None)
    finally:
        proc.kill()
        proc.wait()
    assert running.pid is not None
    wait_gone(running.pid, timeout=5)  # the job process died with its worker: no orphan keeps training
    assert queue.get_job(db, job_id).state == "running"  # nobody has noticed yet

    restarted = Worker(settings, db, options=FAST)
    assert restarted.run_once() is None  # it recovers the orphan; there is nothing queued to run
    job = queue.get_job(db, job_id)
    assert job.state == "interrupted"
    assert f"worker {running.worker_id} stopped" in job.message and "resume" in job.message
    assert job.checkpoint_path is not None
    checkpoint_step = int(job.checkpoint_path.rsplit("-", 1)[1])
    assert checkpoint_step >= 3

    queue.resume(db, job_id)
    done = restarted.run_once()
    assert done is not None and done.id == job_id and done.state == "succeeded" and done.step == 30
    assert f"at step {checkpoint_step}" in queue.log_tail(settings, job_id, n=200)
    steps = [p.step for p in queue.job_metrics(db, job_id)]
    assert steps.count(1) == 1  # not started over
    assert steps[-(30 - checkpoint_step) :] == list(range(checkpoint_step + 1, 31))


def test_background_worker_runs_jobs_and_stopping_it_interrupts_the_running_one(
    settings: Settings, db: Database
) -> None:
    handle = start_background_worker(settings, database_url=db.url, poll_s=0.1)
    try:
        quick = submit(db, steps=2, sleep_s=0.01)
        assert wait_for(db, quick, lambda j: j.state in queue.FINAL_STATES).state == "succeeded"
        slow = submit(db, steps=100, sleep_s=0.1, checkpoint_every=50)
        running = wait_for(db, slow, lambda j: j.step >= 2 and j.pid is not None)
        assert handle.stop(timeout_s=20) == 0
    finally:
        handle.stop(timeout_s=5)
    job = queue.get_job(db, slow)
    assert job.state == "interrupted"
    assert re.fullmatch(
        rf"interrupted at step {job.step}: the worker was stopped; checkpoint .*; resume it to continue", job.message
    )
    assert running.pid is not None and not pid_alive(running.pid)
    assert "stopping" in handle.log_file.read_text()


def test_a_job_process_slow_to_exit_after_its_final_state_is_not_killed_as_lost(
    settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A job process that has written its final state but takes a while to exit (torch, threads, files) is its
    own finished job, not one "taken from this worker": the worker lets it exit and says nothing alarming."""
    import logging

    submit(db, steps=1)
    job = queue.claim_next(db, "host:1", device="cpu")
    assert job is not None
    lease = queue.Lease.of(job)
    from dataclasses import replace

    worker = Worker(settings, db, worker_id="host:1", options=replace(FAST, kill_after_s=5.0))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2.5)"], start_new_session=True)
    assert queue.finish(db, lease, queue.SUCCEEDED, message="succeeded")
    with caplog.at_level(logging.INFO, logger="studio.jobs.worker"):
        ending = worker._watch(proc, lease)
    assert ending == "finished"
    assert proc.returncode == 0, "the worker killed a job process that was exiting by itself"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    worker._record_exit(lease, proc.returncode, ending, queue.log_path(settings, job.id))
    assert queue.get_job(db, job.id).state == "succeeded"
