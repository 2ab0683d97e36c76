"""Tables of notifications (created by migration 10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from studio.db.tables import new_id, utcnow


class Notification(SQLModel, table=True):
    """Something a user should hear about. ``user_id`` None: everyone (the single user, or the whole team)."""

    __tablename__ = "notification"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    user_id: str | None = Field(default=None, index=True, max_length=32)
    kind: str = Field(index=True, max_length=48)  # job.succeeded | job.failed | eval.ready | disk.low | ...
    level: str = Field(default="info", max_length=16)  # info | success | warning | error
    title: str = Field(max_length=300)
    body: str = ""
    link: str = Field(default="", max_length=300)  # where it points: "job:<id>", "eval:<id>", "deployment:<name>"
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class NotificationRead(SQLModel, table=True):
    """Who has read a notification (``reader``: a user id, or "" for the single user)."""

    __tablename__ = "notification_read"
    __table_args__ = (UniqueConstraint("notification_id", "reader"),)

    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(foreign_key="notification.id", ondelete="CASCADE", index=True, max_length=32)
    reader: str = Field(max_length=32)
    read_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One notification sent (or being sent) to one webhook URL: attempts, last answer, final state."""

    __tablename__ = "webhook_delivery"

    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(foreign_key="notification.id", ondelete="CASCADE", index=True, max_length=32)
    url: str = Field(max_length=2048)
    state: str = Field(default="pending", index=True, max_length=16)  # pending | delivered | failed
    attempts: int = 0
    status_code: int | None = None
    error: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


NOTIFICATION_TABLES = (Notification, NotificationRead, WebhookDelivery)
