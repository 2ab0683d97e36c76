"""A small, explicit migration mechanism: numbered steps applied once each, recorded in ``schema_version``.

Each step runs in its own transaction (on PostgreSQL DDL is transactional; on SQLite a failed step leaves
the previous version recorded). Add new steps at the end; never edit an applied one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, inspect, text
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


MIGRATIONS: list[Migration] = [
    Migration(1, "request log", _initial),
    Migration(2, "playground conversations", _conversations),
    Migration(3, "datasets, dataset versions, jobs and job metrics", _datasets_and_jobs),
    Migration(4, "safety findings in the request log", _request_log_safety),
    Migration(5, "compare: battles, rankings, annotators", _compare),
    Migration(6, "eval samples: every generation of an eval run with its scores", _eval_samples),
    Migration(7, "audit generations: each reply of a bias audit, its scores and review", _audit_generations),
]


def current_version(engine: Engine) -> int:
    if not inspect(engine).has_table(SchemaVersion.__tablename__):
        return 0
    with Session(engine) as session:
        versions = session.exec(select(SchemaVersion.version)).all()
    return max(versions, default=0)


def migrate(engine: Engine) -> int:
    """Apply every pending migration; return the schema version afterwards."""
    SQLModel.metadata.create_all(engine, tables=[SchemaVersion.__table__])  # type: ignore[attr-defined]
    done = current_version(engine)
    for m in MIGRATIONS:
        if m.version <= done:
            continue
        with engine.begin() as conn:
            m.apply(conn)
            conn.execute(
                SchemaVersion.__table__.insert().values(  # type: ignore[attr-defined]
                    version=m.version, description=m.description
                )
            )
        log.info("database migrated to version %d (%s)", m.version, m.description)
        done = m.version
    return done
