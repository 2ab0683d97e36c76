"""Persistence: SQLModel tables, engine/sessions, migrations."""

from studio.db.engine import Database, make_engine
from studio.db.tables import RequestLog, SchemaVersion

__all__ = ["Database", "RequestLog", "SchemaVersion", "make_engine"]
