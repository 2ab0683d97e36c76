"""A small, explicit migration mechanism: numbered steps applied once each, recorded in ``schema_version``.

Each step runs in its own transaction (DDL is transactional on PostgreSQL and SQLite: a failed step leaves the
previous version recorded). Add new steps at the end; never edit an applied one.

**Several processes at once.** Two workers (or a server and a worker) started together on an empty database
both find steps to apply. Every step's transaction therefore first takes the *migration lock*, then re-reads
the recorded version and applies the step only if it is still pending; whoever waited finds it done.

- PostgreSQL: ``pg_advisory_xact_lock`` on one key (a single 64-bit key: a key space apart from the job queue's
  per-slot locks, which use two 32-bit keys), held until the transaction ends.
- SQLite: the transaction is ``BEGIN EXCLUSIVE`` (waiting up to the connection's busy timeout for the other
  writer), so the creation of ``schema_version`` itself is covered too.

An up-to-date database is recognised without taking the lock, so opening it costs one read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, inspect, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, select

from studio.db.tables import (
    Conversation,
    ConversationMessage,
    Dataset,
    DatasetVersion,
    Job,
    JobMetric,
    RequestLog,
    SchemaVersion,
    Sweep,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn, tables=[RequestLog.__table__])  # type: ignore[attr-defined]


def _conversations(conn: Connection) -> None:
    SQLModel.metadata.create_all(
        conn,
        tables=[Conversation.__table__, ConversationMessage.__table__],  # type: ignore[attr-defined]
    )


def _datasets_and_jobs(conn: Connection) -> None:
    SQLModel.metadata.create_all(
        conn,
        tables=[
            Dataset.__table__,  # type: ignore[attr-defined]
            DatasetVersion.__table__,  # type: ignore[attr-defined]
            Job.__table__,  # type: ignore[attr-defined]
            JobMetric.__table__,  # type: ignore[attr-defined]
        ],
    )


def _request_log_safety(conn: Connection) -> None:
    # what the safety layer found and did for each generation (studio.safety.service.SafetyReport)
    # (a database created from scratch got the column from migration 1's current table definition)
    if "safety" not in {c["name"] for c in inspect(conn).get_columns("request_log")}:
        conn.execute(text("ALTER TABLE request_log ADD COLUMN safety JSON"))


def _compare(conn: Connection) -> None:
    # imported here: the Compare tables live in their own package and register on SQLModel.metadata when imported
    from studio.compare.tables import COMPARE_TABLES

    tables = [t.__table__ for t in COMPARE_TABLES]  # type: ignore[attr-defined,union-attr]
    SQLModel.metadata.create_all(conn, tables=tables)


def _eval_samples(conn: Connection) -> None:
    # imported here: the evaluation table lives in its own package and registers on SQLModel.metadata when imported
    from studio.evaluation.tables import EvalSample

    SQLModel.metadata.create_all(conn, tables=[EvalSample.__table__])  # type: ignore[attr-defined]


def _audit_generations(conn: Connection) -> None:
    # imported here: the audit table lives in the safety package and registers on SQLModel.metadata when imported
    from studio.safety.tables import AuditGeneration

    SQLModel.metadata.create_all(conn, tables=[AuditGeneration.__table__])  # type: ignore[attr-defined]


def _deployments(conn: Connection) -> None:
    # imported here: the deployment table lives in the deploy package and registers on SQLModel.metadata when imported
    from studio.deploy.tables import Deployment

    SQLModel.metadata.create_all(conn, tables=[Deployment.__table__])  # type: ignore[attr-defined]


def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


def _users(conn: Connection) -> None:
    # imported here: the user tables live in their own package and register on SQLModel.metadata when imported
    from studio.users.tables import USER_TABLES

    SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in USER_TABLES])  # type: ignore[attr-defined,union-attr]
    # who owns what (NULL: made before users existed, or by the single user: shared)
    _add_column(conn, "conversation", "owner_id", "VARCHAR(32)")
    _add_column(conn, "request_log", "user_id", "VARCHAR(32)")
    _add_column(conn, "job", "owner_id", "VARCHAR(32)")
    _add_column(conn, "job", "private", "BOOLEAN NOT NULL DEFAULT FALSE")
    _add_column(conn, "dataset", "owner_id", "VARCHAR(32)")
    _add_column(conn, "dataset", "private", "BOOLEAN NOT NULL DEFAULT FALSE")
    _add_column(conn, "compare_battle", "user_id", "VARCHAR(32)")
    _add_column(conn, "compare_annotator", "user_id", "VARCHAR(32)")
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_conversation_owner_id ON conversation (owner_id)"))
    for table, column in (("job", "owner_id"), ("dataset", "owner_id"), ("compare_battle", "user_id")):
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column} ON {table} ({column})"))


def _monitoring_and_notifications(conn: Connection) -> None:
    # imported here: the tables live in their own packages and register on SQLModel.metadata when imported
    from studio.monitoring.tables import MONITORING_TABLES
    from studio.notifications.tables import NOTIFICATION_TABLES

    tables = [t.__table__ for t in (*MONITORING_TABLES, *NOTIFICATION_TABLES)]  # type: ignore[attr-defined,union-attr]
    SQLModel.metadata.create_all(conn, tables=tables)


def _sweeps(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn, tables=[Sweep.__table__])  # type: ignore[attr-defined]
    # a database created from scratch got the column (and its index) from migration 3's current table definition
    _add_column(conn, "job", "sweep_id", "VARCHAR(32)")
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_job_sweep_id ON job (sweep_id)"))


MIGRATIONS: list[Migration] = [
    Migration(1, "request log", _initial),
    Migration(2, "playground conversations", _conversations),
    Migration(3, "datasets, dataset versions, jobs and job metrics", _datasets_and_jobs),
    Migration(4, "safety findings in the request log", _request_log_safety),
    Migration(5, "compare: battles, rankings, annotators", _compare),
    Migration(6, "eval samples: every generation of an eval run with its scores", _eval_samples),
    Migration(7, "audit generations: each reply of a bias audit, its scores and review", _audit_generations),
    Migration(8, "deployments: serving processes and remote endpoints", _deployments),
    Migration(9, "users, API tokens, audit log; owners of conversations, jobs, datasets, battles, log rows", _users),
    Migration(
        10, "job resource samples, notifications, their readers and webhook deliveries", _monitoring_and_notifications
    ),
    Migration(11, "sweeps: grid and random searches over a job config; the sweep of each job", _sweeps),
]


_PG_MIGRATION_LOCK = 0x57E7_0DB0  # "whetstone db": the advisory lock key of migrations


@contextmanager
def _locked_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the migration lock; committed on success, rolled back on any error."""
    with engine.connect() as conn:
        backend = engine.dialect.name
        if backend == "sqlite":
            # the driver starts no transaction before DDL by itself: say BEGIN, and make it exclusive
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
        elif backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _recorded_version(conn: Connection) -> int:
    SQLModel.metadata.create_all(conn, tables=[SchemaVersion.__table__])  # type: ignore[attr-defined]
    versions = conn.execute(sa_select(func.max(SchemaVersion.__table__.c.version))).scalar()  # type: ignore[attr-defined]
    return int(versions or 0)


def current_version(engine: Engine) -> int:
    """The newest migration recorded in the database (0 for an empty database)."""
    if not inspect(engine).has_table(SchemaVersion.__tablename__):
        return 0
    with Session(engine) as session:
        versions = session.exec(select(SchemaVersion.version)).all()
    return max(versions, default=0)


def migrate(engine: Engine) -> int:
    """Apply every pending migration, safe against other processes doing the same; return the schema version."""
    latest = MIGRATIONS[-1].version
    done = current_version(engine)
    if done >= latest:
        return done
    while True:
        with _locked_transaction(engine) as conn:
            done = _recorded_version(conn)  # another process may have applied steps while we waited
            step = next((m for m in MIGRATIONS if m.version > done), None)
            if step is None:
                return done
            step.apply(conn)
            conn.execute(
                SchemaVersion.__table__.insert().values(  # type: ignore[attr-defined]
                    version=step.version, description=step.description
                )
            )
        log.info("database migrated to version %d (%s)", step.version, step.description)
