"""Who may see and change shared things (issue 19): jobs and datasets belong to the user who made them.

With users configured, a job or dataset is shared read-only with the team unless marked private (then only its
owner and admins see it); only its owner or an admin may change it. Things made before users existed, or by the
single user, the CLI or ``STUDIO_API_KEY`` (no user id), belong to nobody: only admins change them. Without a
signed-in user (single-user studio, CLI, jobs) every check passes.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, or_, select

from studio.auth import Principal
from studio.errors import ForbiddenError, RateLimitError
from studio.settings import load_defaults
from studio.users.acting import current_principal


def _member(principal: Principal | None) -> Principal | None:
    """The principal when rules apply to it (a signed-in non-admin user), else None."""
    if principal is None or principal.user_id is None or principal.role == "admin":
        return None
    return principal


def visible(stmt: Any, owner_col: Any, private_col: Any) -> Any:
    """``stmt`` limited to what the current user may see: everything shared, and their own private things."""
    who = _member(current_principal())
    if who is None:
        return stmt
    return stmt.where(or_(col(private_col).is_(False), col(owner_col) == who.user_id))


def can_see(owner_id: str | None, private: bool) -> bool:
    who = _member(current_principal())
    return who is None or not private or owner_id == who.user_id


def can_see_named(owner_name: str | None, private: bool) -> bool:
    """Like :func:`can_see` for things that name their owner (alias files)."""
    who = _member(current_principal())
    return who is None or not private or owner_name == who.name


def check_owner_named(what: str, owner_name: str | None) -> None:
    """Like :func:`check_owner` for things that name their owner (alias files)."""
    who = _member(current_principal())
    if who is None or (owner_name is not None and owner_name == who.name):
        return
    whose = f"belongs to {owner_name}" if owner_name else "was made before users existed"
    raise ForbiddenError(f"{what} {whose}: only its owner or an admin may change it", code="forbidden")


def acting_user_name() -> str | None:
    """The signed-in user's name (None: the single user, the CLI, a job, STUDIO_API_KEY)."""
    who = current_principal()
    return who.name if who is not None and who.user_id is not None else None


def check_owner(what: str, owner_id: str | None, db: Any = None) -> None:
    """Refuse (403) a change of ``what`` by a member who does not own it."""
    who = _member(current_principal())
    if who is None or (owner_id is not None and owner_id == who.user_id):
        return
    owner = user_name(db, owner_id) if db is not None and owner_id is not None else None
    whose = (
        f"belongs to {owner}" if owner else ("was made before users existed" if owner_id is None else "is not yours")
    )
    raise ForbiddenError(f"{what} {whose}: only its owner or an admin may change it", code="forbidden")


def user_name(db: Any, user_id: str | None) -> str | None:
    """The name of the user with ``user_id`` (None for None or a removed user)."""
    if user_id is None:
        return None
    from studio.users.tables import User

    with db.session() as s:
        user = s.get(User, user_id)
        return user.name if user is not None else None


def user_names(db: Any) -> dict[str, str]:
    """Every user's id -> name (for tables that show owners)."""
    from studio.users.tables import User

    with db.session() as s:
        return {u.id: u.name for u in s.exec(select(User)).all()}


def quota(db: Any, principal: Principal, key: str) -> float | None:
    """The user's own limit ``key`` if set, else their role's (``configs/defaults.yaml`` ``quotas``); None: none."""
    from studio.users.tables import User

    with db.session() as s:
        user = s.get(User, principal.user_id) if principal.user_id else None
        own = dict(user.quotas or {}) if user is not None else {}
    if key in own:
        return None if own[key] is None else float(own[key])
    value = ((load_defaults().get("quotas") or {}).get(principal.role) or {}).get(key)
    return None if value is None else float(value)


def check_job_quotas(db: Any, device: str) -> None:
    """Before queueing a job for the current user: their ``queued_jobs`` (queued or running) and, for a GPU job,
    ``gpu_hours_per_day`` (hours their GPU jobs ran since 00:00 UTC) quotas; 429 naming the quota when over."""
    who = current_principal()
    if who is None or who.user_id is None:
        return
    from datetime import UTC, datetime

    from studio.db.tables import Job

    limit = quota(db, who, "queued_jobs")
    if limit is not None:
        with db.session() as s:
            mine = s.exec(
                select(Job.id).where(col(Job.owner_id) == who.user_id, col(Job.state).in_(("queued", "running")))
            ).all()
        if len(mine) >= limit:
            raise RateLimitError(
                f"{who.name} has {len(mine)} job(s) queued or running, the most the queued_jobs quota of a "
                f"{who.role} allows ({int(limit)}): wait for one to finish, or ask an admin to raise it",
                retry_after=60.0,
                param="queued_jobs",
            )
    if not device.startswith("cuda"):
        return
    limit = quota(db, who, "gpu_hours_per_day")
    if limit is None:
        return
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with db.session() as s:
        jobs = s.exec(
            select(Job).where(
                col(Job.owner_id) == who.user_id, col(Job.device).startswith("cuda"), col(Job.started_at).is_not(None)
            )
        ).all()
    used = 0.0
    for job in jobs:
        start = _utc(job.started_at)
        end = _utc(job.finished_at) if job.finished_at is not None else now
        if end > midnight:
            used += (end - max(start, midnight)).total_seconds() / 3600
    if used >= limit:
        raise RateLimitError(
            f"{who.name}'s GPU jobs ran {used:.1f} h today (UTC), the gpu_hours_per_day quota of a {who.role} is "
            f"{limit:g} h: queue it on the CPU, wait until tomorrow, or ask an admin to raise it",
            retry_after=3600.0,
            param="gpu_hours_per_day",
        )


def _utc(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
