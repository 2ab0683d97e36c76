"""Database engine and sessions. SQLite (WAL, foreign keys on) by default; PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session, create_engine

from studio.db.migrations import migrate
from studio.errors import ValidationError

SQLITE_BUSY_TIMEOUT_S = 30.0  # how long a SQLite connection waits for another writer


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` and bring its schema up to date."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValidationError(
            f"STUDIO_DATABASE_URL is not a database URL: {url!r} ({exc})", param="database_url"
        ) from None
    if parsed.drivername in ("postgres", "postgres+psycopg"):  # Heroku-style URLs
        parsed = parsed.set(drivername="postgresql")
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what we install
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ValidationError(
            f"STUDIO_DATABASE_URL names an unsupported database {parsed.drivername!r} "
            f"(use sqlite:///path or postgresql://user@host/db): {exc}",
            param="database_url",
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise ValidationError(
                f"STUDIO_DATABASE_URL points into {folder}, which does not exist", param="database_url"
            )
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        shown = parsed.render_as_string(hide_password=True)
        raise ValidationError(
            f"could not open the database {shown} (STUDIO_DATABASE_URL): {exc.orig}", param="database_url"
        ) from None
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def _use_wal(cur: Any) -> None:
    # Turning a new file into WAL mode needs a moment of exclusive access, and SQLite answers "database is locked"
    # at once instead of waiting out the busy timeout: a second process opening the same new file at that moment
    # (two workers started together) would fail. Retry for as long as the busy timeout would have waited.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Database:
    """Session factory handed around in ``AppContext``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
