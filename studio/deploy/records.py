"""What a deployment row looks like to callers (:class:`DeploymentPublic`), where its log lives, how a row is found
by id, name or id prefix, and the URLs and headers its health checks use. The lifecycle is in
:mod:`studio.deploy.service`; the checks in :mod:`studio.deploy.checks`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlmodel import select

from studio.db.engine import Database
from studio.deploy.tables import Deployment
from studio.errors import NotFoundError
from studio.paths import display_path
from studio.settings import Settings

RUNNING = ("starting", "healthy", "unhealthy")  # a process is (meant to be) alive
STATUSES = ("starting", "healthy", "unhealthy", "stopped", "failed", "lost")


class DeploymentPublic(BaseModel):
    """A deployment as the table, the CLI and the REST API show it."""

    id: str
    name: str
    kind: str
    target: str
    target_kind: str
    model_id: str
    adapter: str | None
    engine: str
    host: str
    port: int | None
    url: str  # the OpenAI base URL (…/v1)
    served_model: str
    api_key_env: str | None
    status: str
    message: str
    pid: int | None
    uptime_s: float | None  # while running (remote: since it answered healthy)
    requests_served: int | None  # None for a remote endpoint (it does not say)
    log_file: str | None  # $STUDIO_HOME/deployments/<id>/server.log (None for a remote endpoint)
    created_at: datetime
    started_at: datetime | None
    checked_at: datetime | None

    @classmethod
    def from_row(cls, row: Deployment, settings: Settings) -> DeploymentPublic:
        since = row.started_at if row.kind == "local" else row.healthy_at
        running = row.status in RUNNING if row.kind == "local" else row.status == "healthy"
        uptime = (now() - aware(since)).total_seconds() if running and since is not None else None
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            target=row.target,
            target_kind=row.target_kind,
            model_id=row.model_id,
            adapter=row.adapter,
            engine=row.engine,
            host=row.host,
            port=row.port,
            url=row.base_url,
            served_model=row.served_model,
            api_key_env=row.api_key_env,
            status=row.status,
            message=row.message,
            pid=row.pid,
            uptime_s=uptime,
            requests_served=row.requests_served if row.kind == "local" else None,
            log_file=display_path(log_path(settings, row.id), settings) if row.kind == "local" else None,
            created_at=row.created_at,
            started_at=row.started_at,
            checked_at=row.checked_at,
        )


def now() -> datetime:
    """The current time in UTC (rows store UTC)."""
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone: they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def deployments_dir(settings: Settings) -> Path:
    """``STUDIO_HOME/deployments``: one folder per deployment id (its server.log)."""
    return settings.home / "deployments"


def log_path(settings: Settings, deployment_id: str) -> Path:
    """``STUDIO_HOME/deployments/<id>/server.log``."""
    return deployments_dir(settings) / deployment_id / "server.log"


def find_row(session: Any, ref: str) -> Deployment:
    """The row ``ref`` names: an id, a name, or a unique id prefix of 4+ characters (404 listing the names)."""
    text = (ref or "").strip()
    rows: list[Deployment] = list(session.exec(select(Deployment)).all())
    for row in rows:
        if row.id == text or row.name == text:
            return row
    prefixed = [r for r in rows if len(text) >= 4 and r.id.startswith(text)]
    if len(prefixed) == 1:
        return prefixed[0]
    names = ", ".join(sorted(r.name for r in rows)) or "none"
    raise NotFoundError(f"deployment '{text}' not found; deployments: {names}", param="deployment")


def get_deployment(db: Database, settings: Settings, ref: str) -> DeploymentPublic:
    """One deployment by id, name or a unique id prefix (4+ characters), as last checked (no new check)."""
    with db.session() as session:
        return DeploymentPublic.from_row(find_row(session, ref), settings)


def auth_headers(row: Deployment, settings: Settings) -> dict[str, str]:
    """The Authorization header a check sends: the studio's key to a process it started (which got the same key),
    the key in a remote endpoint's ``api_key_env`` variable to that endpoint, nothing when there is none."""
    key = settings.api_key if row.kind == "local" else (os.environ.get(row.api_key_env or "") or None)
    return {"Authorization": f"Bearer {key}"} if key else {}


def check_host(host: str) -> str:
    """The address health checks use: loopback for a wildcard bind."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host


def server_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 address in brackets)."""
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}"


def uptime_text(seconds: float | None) -> str:
    """``12m05s``, ``3h20m``, ``2d4h``; ``-`` when not running."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 60}m{s % 60:02d}s"
