"""Tables of users, their API tokens and the audit log (created by migration 9)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from studio.db.tables import new_id, utcnow


class User(SQLModel, table=True):
    """A person who signs in. ``password_hash`` is an argon2 hash (pwdlib); None for a Hugging Face sign-in only."""

    __tablename__ = "studio_user"  # "user" is a reserved word in PostgreSQL

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(unique=True, max_length=64)
    role: str = Field(default="member", max_length=16)  # admin | member | viewer
    password_hash: str | None = Field(default=None, max_length=512)
    hf_username: str | None = Field(default=None, unique=True, max_length=96)
    session_epoch: int = 0  # bumped by a password or role change: every session signed before ends
    quotas: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # overrides
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A personal API token: shown once when created, stored as its sha256 (a token is 256 random bits)."""

    __tablename__ = "api_token"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="studio_user.id", ondelete="CASCADE", index=True, max_length=32)
    name: str = Field(max_length=100)
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)  # the first characters, to recognise a token in a list
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class AuditEvent(SQLModel, table=True):
    """One admin action or failed sign-in: who, what, on whom, from where."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=96)  # a user name, "cli", or the name typed at a failed sign-in
    action: str = Field(index=True, max_length=48)  # user.add | user.passwd | user.role | user.rm | token.* | signin.*
    target: str = Field(default="", max_length=200)
    ip: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


USER_TABLES = (User, ApiToken, AuditEvent)
