"""Notifications: what happened that a user should hear about (a job ended, a report is ready, a deployment is
unhealthy, the disk is nearly full).

Lifecycle of one notification:

- :func:`notify` stores a ``notification`` row; with ``settings`` it also queues one ``webhook_delivery`` row per URL
  that ``STUDIO_HOME/notifications.yaml`` configures for its kind. Callers without settings (the job-end hook runs
  in the job's own process) leave that to the server's delivery thread (:mod:`studio.notifications.webhooks`),
  which queues the same rows for notifications that have none. Webhook trouble never reaches the caller.
- The UI polls :func:`since` for toasts and :func:`unread_count` for the bell; :func:`for_user` lists them.
- :func:`mark_read` adds a ``notification_read`` row per reader (a user id, or "" for the single user), so one
  notification meant for everyone (``user_id`` None) is read or unread separately for each user.

Who sees what: a user sees their own notifications and those with ``user_id`` None; ``user_id`` None (the single
user of a studio without sign-in, the operator key) sees all of them.

Importing this module registers :func:`on_job_end` in ``studio.jobs.queue.JOB_END_HOOKS``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, func, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from studio.db.engine import Database
from studio.db.tables import Job, utcnow
from studio.errors import ValidationError
from studio.jobs import queue
from studio.jobs.queue import as_utc
from studio.notifications.tables import Notification, NotificationRead
from studio.settings import Settings

log = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("info", "success", "warning", "error")
#: every kind the studio sends (webhooks may name these, or "*")
KINDS: tuple[str, ...] = (
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.interrupted",
    "eval.ready",
    "audit.ready",
    "deployment.unhealthy",
    "disk.low",
)
#: a job's final state -> (notification kind, level)
JOB_END_KINDS: dict[str, tuple[str, str]] = {
    queue.SUCCEEDED: ("job.succeeded", "success"),
    queue.FAILED: ("job.failed", "error"),
    queue.CANCELLED: ("job.cancelled", "warning"),
    queue.INTERRUPTED: ("job.interrupted", "warning"),
}
#: job kinds whose success also means "a report is ready": job kind -> (notification kind, link prefix, what)
REPORT_KINDS: dict[str, tuple[str, str, str]] = {
    "eval": ("eval.ready", "eval", "Evaluation report"),
    "audit": ("audit.ready", "audit", "Audit report"),
}
DEDUPE_WINDOW = timedelta(hours=1)  # deployment.unhealthy / disk.low: at most one per kind+link in this window


@dataclass(frozen=True)
class NotificationPublic:
    """A notification as one reader sees it (``read``: whether that reader has marked it read)."""

    id: str
    created_at: datetime
    kind: str
    level: str
    title: str
    body: str
    link: str
    data: dict[str, Any]
    user_id: str | None
    read: bool


def reader_of(user_id: str | None) -> str:
    """The ``notification_read.reader`` value for ``user_id`` ("" for the single user)."""
    return user_id or ""


def notify(
    db: Database,
    kind: str,
    title: str,
    *,
    body: str = "",
    link: str = "",
    level: str = "info",
    user_id: str | None = None,
    data: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Notification:
    """Store a notification for ``user_id`` (None: everyone) and return it.

    With ``settings``, one pending webhook delivery per URL configured for ``kind`` is queued in the same
    transaction; without, the delivery thread queues them (see the module docstring). A broken webhook
    configuration is logged, never raised.
    """
    if level not in LEVELS:
        raise ValidationError(f"notification level must be one of {', '.join(LEVELS)}; got {level!r}", param="level")
    if not kind or len(kind) > 48:
        raise ValidationError(f"a notification kind has 1-48 characters; got {kind!r}", param="kind")
    row = Notification(
        kind=kind,
        title=title[:300],
        body=body,
        link=link[:300],
        level=level,
        user_id=user_id,
        data=dict(data or {}),
    )
    deliveries = []
    if settings is not None:
        from studio.notifications.webhooks import deliveries_for

        try:
            deliveries = deliveries_for(settings, row)
        except Exception:  # a broken notifications.yaml must not stop the notification itself
            log.exception("webhooks not queued for notification %s (%s)", row.id, kind)
    with db.session() as session:
        session.add(row)
        session.flush()  # the deliveries' foreign key needs the notification first (PostgreSQL checks at once)
        for delivery in deliveries:
            session.add(delivery)
    row.created_at = as_utc(row.created_at)
    return row


def _visible(user_id: str | None) -> Any:
    """The WHERE clause of the notifications ``user_id`` sees."""
    if user_id is None:
        return True
    return or_(col(Notification.user_id) == user_id, col(Notification.user_id).is_(None))


def _public(row: Notification, read: bool) -> NotificationPublic:
    return NotificationPublic(
        id=row.id,
        created_at=as_utc(row.created_at),
        kind=row.kind,
        level=row.level,
        title=row.title,
        body=row.body,
        link=row.link,
        data=dict(row.data or {}),
        user_id=row.user_id,
        read=read,
    )


def _with_read(user_id: str | None) -> Any:
    """SELECT notification, its read row for this reader (or NULL)."""
    on = and_(
        col(NotificationRead.notification_id) == col(Notification.id),
        col(NotificationRead.reader) == reader_of(user_id),
    )
    return (
        select(Notification, NotificationRead.id)  # type: ignore[call-overload]
        .outerjoin(NotificationRead, on)
        .where(_visible(user_id))
    )


def for_user(db: Database, user_id: str | None, limit: int = 50, unread_only: bool = False) -> list[NotificationPublic]:
    """The notifications ``user_id`` sees, newest first (at most ``limit``; ``unread_only``: those not read)."""
    query = _with_read(user_id)
    if unread_only:
        query = query.where(col(NotificationRead.id).is_(None))
    query = query.order_by(col(Notification.created_at).desc(), col(Notification.id).desc()).limit(max(1, limit))
    with db.session() as session:
        rows = session.exec(query).all()
    return [_public(row, read_id is not None) for row, read_id in rows]


def unread_count(db: Database, user_id: str | None) -> int:
    """How many notifications ``user_id`` sees and has not marked read."""
    on = and_(
        col(NotificationRead.notification_id) == col(Notification.id),
        col(NotificationRead.reader) == reader_of(user_id),
    )
    query = (
        select(func.count())
        .select_from(Notification)
        .outerjoin(NotificationRead, on)
        .where(_visible(user_id), col(NotificationRead.id).is_(None))
    )
    with db.session() as session:
        return int(session.exec(query).one())


def mark_read(db: Database, user_id: str | None, ids: Iterable[str] | Literal["all"]) -> int:
    """Mark notifications read for ``user_id``: the given ids (those the user does not see are ignored) or
    ``"all"``. Returns how many were newly marked; marking one twice (two open pages) is harmless."""
    query = _with_read(user_id).where(col(NotificationRead.id).is_(None))
    if ids != "all":
        wanted = sorted({str(i) for i in ids})
        if not wanted:
            return 0
        query = query.where(col(Notification.id).in_(wanted))
    with db.session() as session:
        unread = [row.id for row, _ in session.exec(query).all()]
    if not unread:
        return 0
    values = [{"notification_id": nid, "reader": reader_of(user_id), "read_at": utcnow()} for nid in unread]
    table = NotificationRead.__table__  # type: ignore[attr-defined]
    dialect = db.engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(values).on_conflict_do_nothing(index_elements=["notification_id", "reader"])
    with db.engine.begin() as conn:
        result = conn.execute(statement)
    return int(result.rowcount) if result.rowcount is not None and result.rowcount >= 0 else len(unread)


def since(db: Database, user_id: str | None, after: datetime, limit: int = 20) -> list[NotificationPublic]:
    """The notifications ``user_id`` sees created after ``after`` (naive: UTC), oldest first: what to toast."""
    query = (
        _with_read(user_id)
        .where(col(Notification.created_at) > as_utc(after))
        .order_by(col(Notification.created_at), col(Notification.id))
        .limit(max(1, limit))
    )
    with db.session() as session:
        rows = session.exec(query).all()
    return [_public(row, read_id is not None) for row, read_id in rows]


# --- events ---------------------------------------------------------------------------------------------------


def _job_label(job: Job) -> str:
    return f"'{job.name}'" if job.name else job.id[:8]


def on_job_end(db: Database, job: Job) -> None:
    """The job-end hook (registered in ``queue.JOB_END_HOOKS``): see :func:`notify_job_end`."""
    notify_job_end(db, job)


def notify_job_end(db: Database, job: Job) -> list[Notification]:
    """The notifications of a job that reached a final state: one ``job.<state>`` for its owner, and
    ``eval.ready`` / ``audit.ready`` when an evaluation or audit succeeded."""
    if job.state not in JOB_END_KINDS:
        return []
    kind, level = JOB_END_KINDS[job.state]
    data = {"job_id": job.id, "job_kind": job.kind, "name": job.name, "state": job.state}
    made = [
        notify(
            db,
            kind,
            f"{job.kind} job {_job_label(job)} {job.state}",
            body=job.message or "",
            link=f"job:{job.id}",
            level=level,
            user_id=job.owner_id,
            data=data,
        )
    ]
    report = REPORT_KINDS.get(job.kind)
    if report is not None and job.state == queue.SUCCEEDED:
        report_kind, prefix, what = report
        made.append(
            notify(
                db,
                report_kind,
                f"{what} ready: {_job_label(job)}",
                body=job.message or "",
                link=f"{prefix}:{job.id}",
                level="success",
                user_id=job.owner_id,
                data=data,
            )
        )
    return made


def _recent(db: Database, kind: str, link: str, now: datetime) -> bool:
    query = (
        select(Notification.id)
        .where(
            col(Notification.kind) == kind,
            col(Notification.link) == link,
            col(Notification.created_at) > now - DEDUPE_WINDOW,
        )
        .limit(1)
    )
    with db.session() as session:
        return session.exec(query).first() is not None


def notify_deployment_unhealthy(
    db: Database, name: str, message: str, *, settings: Settings | None = None, now: datetime | None = None
) -> Notification | None:
    """Tell everyone that deployment ``name`` failed its health check; None when it was said within the hour."""
    link = f"deployment:{name}"
    if _recent(db, "deployment.unhealthy", link, as_utc(now) if now else utcnow()):
        return None
    return notify(
        db,
        "deployment.unhealthy",
        f"Deployment '{name}' is unhealthy",
        body=message,
        link=link,
        level="error",
        data={"deployment": name},
        settings=settings,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def notify_disk_low(
    db: Database,
    path: str,
    free_bytes: int,
    total_bytes: int,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> Notification | None:
    """Tell everyone that the volume holding ``path`` is nearly full; None when it was said within the hour."""
    link = f"disk:{path}"
    if _recent(db, "disk.low", link, as_utc(now) if now else utcnow()):
        return None
    share = 100.0 * free_bytes / total_bytes if total_bytes > 0 else 0.0
    return notify(
        db,
        "disk.low",
        f"Disk nearly full: {_size(free_bytes)} free of {_size(total_bytes)} ({share:.0f}%) at {path}",
        body="Free space under STUDIO_HOME: delete old checkpoints, exports or unused dataset versions.",
        link=link,
        level="warning",
        data={"path": path, "free_bytes": free_bytes, "total_bytes": total_bytes},
        settings=settings,
    )


if on_job_end not in queue.JOB_END_HOOKS:
    queue.JOB_END_HOOKS.append(on_job_end)
