"""Database tables (SQLModel). Table classes are singular nouns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A random 32-character hex id (uuid4), used where ids appear in URLs."""
    return uuid.uuid4().hex


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


class Conversation(SQLModel, table=True):
    """One saved Playground conversation; its turns are ``ConversationMessage`` rows."""

    __tablename__ = "conversation"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    title: str = Field(default="", max_length=200)  # "" until the first user message names it
    model: str = Field(index=True, max_length=512)  # the model of the latest saved exchange
    use_case: str | None = Field(default=None, index=True, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)  # the history lists newest first


class ConversationMessage(SQLModel, table=True):
    """One turn of a conversation, with the model, parameters and figures of the generation behind it."""

    __tablename__ = "conversation_message"
    # one row per place in the conversation: two writers racing for the same position fail instead of interleaving;
    # the constraint's index also serves "messages of conversation X in order"
    __table_args__ = (UniqueConstraint("conversation_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", ondelete="CASCADE", max_length=32)
    position: int  # 0-based order within the conversation
    role: str = Field(max_length=16)
    content: str
    created_at: datetime = Field(default_factory=utcnow)
    model: str | None = Field(default=None, max_length=512)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stats: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
