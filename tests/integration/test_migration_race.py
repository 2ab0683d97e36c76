"""Two processes opening the same empty database at the same instant (two workers, or a server and a worker,
started together): both must come up, and every migration must be recorded exactly once. Each round uses a fresh
database; the processes start their rounds at agreed wall-clock instants so that their migrations really overlap."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from studio.db.migrations import MIGRATIONS

ROUNDS = 6
ROUND_S = 1.5  # one migration of an empty database takes well under this

# imports first (slow, and at a different pace in each process), then one Database(url) per round at its instant
OPEN_AT = """
import sys, time
from studio.db import Database
start, step, urls = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
for i, url in enumerate(urls):
    time.sleep(max(0.0, start + i * step - time.time()))
    Database(url).dispose()
    print("opened", i, flush=True)
"""


def open_together(urls: list[str]) -> None:
    """Run two processes that open each of ``urls`` at the same moment; both must succeed at every round."""
    start = time.time() + 8.0  # time for both interpreters to import the studio on a busy machine
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, str(start), str(ROUND_S), *urls],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, f"a process opening the database crashed:\n{err[-3000:]}"
        assert out.count("opened") == len(urls)


def recorded_versions(url: str) -> list[int]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            return sorted(v for (v,) in conn.execute(text("SELECT version FROM schema_version")))
    finally:
        engine.dispose()


@pytest.fixture
def fresh_pg_urls(pg_url: str) -> Iterator[list[str]]:
    """``ROUNDS`` fresh, empty databases on the test server (the first is ``pg_url`` itself)."""
    base = make_url(pg_url).set(drivername="postgresql+psycopg")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    names = [f"whetstone_race_{uuid.uuid4().hex[:12]}" for _ in range(ROUNDS - 1)]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield [pg_url] + [
            base.set(database=n).render_as_string(hide_password=False).replace("+psycopg", "") for n in names
        ]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_two_processes_migrate_one_empty_postgresql_database_at_once(fresh_pg_urls: list[str]) -> None:
    open_together(fresh_pg_urls)
    for url in fresh_pg_urls:
        assert recorded_versions(url) == [m.version for m in MIGRATIONS]


def test_two_processes_migrate_one_empty_sqlite_file_at_once(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / f'studio-{i}.db'}" for i in range(ROUNDS)]
    open_together(urls)
    for url in urls:
        assert recorded_versions(url) == [m.version for m in MIGRATIONS]
