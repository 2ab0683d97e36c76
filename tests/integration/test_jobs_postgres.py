"""The job queue on a real PostgreSQL server (STUDIO_TEST_DATABASE_URL; skipped when none answers): workers on
separate connections racing for one queue never take the same job nor run two jobs on one device."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from studio.db import Database
from studio.jobs import queue
from studio.jobs.queue import Lease
from studio.jobs.worker import Worker, WorkerOptions
from studio.settings import Settings


def test_two_workers_never_claim_the_same_job(pg_url: str) -> None:
    setup = Database(pg_url)
    devices = ["cpu", "cuda:0", "cuda:1"]
    total = 60
    for i in range(total):
        queue.submit(setup, "selftest", {"steps": 1}, device=devices[i % len(devices)], priority=i % 4)
    claims: list[tuple[str, str, str]] = []
    overlaps: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        db = Database(pg_url)  # its own engine and connections, like a worker on another machine
        try:
            start.wait()
            idle = 0
            while idle < 20:
                got = False
                for device in devices:
                    job = queue.claim_next(db, name, device=device)
                    if job is None:
                        continue
                    got = True
                    with lock:
                        claims.append((job.id, name, device))
                    # while this job runs, no other job may run on its device
                    busy = [j for j in queue.list_jobs(db, state="running") if j.device == device]
                    if len(busy) != 1:
                        overlaps.append(device)
                    assert queue.finish(db, Lease.of(job), "succeeded")
                idle = 0 if got else idle + 1
        finally:
            db.dispose()

    threads = [threading.Thread(target=worker, args=(f"host{n}:{n}",)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = [c[0] for c in claims]
    assert len(ids) == total and len(set(ids)) == total  # every job once, none twice
    assert overlaps == []
    assert {c[1] for c in claims} == {"host1:1", "host2:2"}  # both really took part
    assert all(j.state == "succeeded" for j in queue.list_jobs(setup, limit=1000))
    setup.dispose()


def test_claim_order_schedule_and_device_on_postgresql(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        now = datetime.now(UTC)
        low = queue.submit(db, "selftest", {}, priority=0).id
        high = queue.submit(db, "selftest", {}, priority=9).id
        later = queue.submit(db, "selftest", {}, priority=99, not_before=now + timedelta(minutes=5)).id
        first = queue.claim_next(db, "w:1", now=now)
        assert first is not None and first.id == high and first.started_at is not None
        assert first.started_at.tzinfo is not None
        assert queue.claim_next(db, "w:2", now=now) is None  # cpu is busy
        queue.finish(db, Lease.of(first), "succeeded")
        second = queue.claim_next(db, "w:2", now=now)
        assert second is not None and second.id == low
        queue.finish(db, Lease.of(second), "succeeded")
        assert queue.claim_next(db, "w:2", now=now) is None  # not yet
        third = queue.claim_next(db, "w:2", now=now + timedelta(minutes=6))
        assert third is not None and third.id == later
    finally:
        db.dispose()


def test_worker_runs_a_job_process_against_postgresql(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=pg_url)
    settings.ensure_dirs()
    db = Database(pg_url)
    try:
        job_id = queue.submit(db, "selftest", {"steps": 2, "sleep_s": 0.01}).id
        done = Worker(settings, db, options=WorkerOptions(poll_s=0.1, watch_s=0.05)).run_once()
        assert done is not None and done.id == job_id and done.state == "succeeded", done and done.message
        assert [m.step for m in queue.job_metrics(db, job_id)] == [1, 2]
    finally:
        db.dispose()
