"""Database tables (SQLModel). Table classes are singular nouns."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class SchemaVersion(SQLModel, table=True):
    """One row per applied migration."""

    __tablename__ = "schema_version"

    version: int = Field(primary_key=True)
    description: str
    applied_at: datetime = Field(default_factory=utcnow)


class RequestLog(SQLModel, table=True):
    """One finished generation, whichever door it came through (UI, OpenAI API, CLI)."""

    __tablename__ = "request_log"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    model: str = Field(index=True, max_length=512)
    alias: str | None = Field(default=None, index=True, max_length=512)
    endpoint: str = Field(max_length=64)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    total_ms: float = 0.0
    finish_reason: str = Field(default="", max_length=32)
    error: str | None = None
