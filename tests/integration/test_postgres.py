"""The database layer on a real PostgreSQL server (STUDIO_TEST_DATABASE_URL; skipped when none answers)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlmodel import select

from studio.db import Database, RequestLog
from studio.db.migrations import MIGRATIONS


def test_migrations_and_rows_on_postgresql(pg_url: str) -> None:
    db = Database(pg_url)  # a plain postgresql:// URL is accepted and driven by psycopg 3
    try:
        assert db.engine.dialect.name == "postgresql"
        with db.session() as s:
            s.add(RequestLog(request_id="r1", model="m", endpoint="test", prompt_tokens=3, completion_tokens=4))
        with db.session() as s:
            rows = s.exec(select(RequestLog)).all()
        assert [(r.request_id, r.completion_tokens) for r in rows] == [("r1", 4)]
        assert rows[0].created_at.tzinfo is not None
    finally:
        db.dispose()
    again = Database(pg_url)  # a second start migrates nothing and keeps the data
    try:
        with again.engine.connect() as conn:
            versions = conn.execute(text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
        assert versions == [m.version for m in MIGRATIONS]
    finally:
        again.dispose()


def test_failed_transaction_leaves_nothing_on_postgresql(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        with pytest.raises(RuntimeError), db.session() as s:
            s.add(RequestLog(request_id="half", model="m", endpoint="test"))
            s.flush()
            raise RuntimeError("crash mid-transaction")
        with db.session() as s:
            assert s.exec(select(RequestLog)).all() == []
    finally:
        db.dispose()
