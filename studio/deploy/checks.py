"""Health checks of deployments: what each check finds and writes to the row (the state machine is drawn in
:mod:`studio.deploy.service`). Every status comes from a real check -- the process (pid, start time, argv), its
``/health`` and ``/metrics``, or a remote endpoint's ``/models`` -- never from an assumption.

A process found dead is *failed* when a check of a running studio finds it, *lost* when the studio finds it at
start (:func:`reattach`); either way the row keeps the last lines of its log.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlmodel import select

from studio.db.engine import Database
from studio.deploy import health
from studio.deploy.process import process_state, tail, wait_reaped
from studio.deploy.records import (
    RUNNING,
    DeploymentPublic,
    auth_headers,
    aware,
    check_host,
    find_row,
    log_path,
    now,
    server_url,
)
from studio.deploy.tables import Deployment
from studio.errors import NotFoundError
from studio.settings import Settings

FAILURE_LOG_LINES = 15

log = logging.getLogger(__name__)


def _check_remote(row: Deployment, settings: Settings, at: datetime) -> None:
    if row.api_key_env and not os.environ.get(row.api_key_env):
        row.status, row.healthy_at = "unhealthy", None
        row.message = f"the environment variable {row.api_key_env} (its API key) is not set in the studio's environment"
        return
    answer = health.check(f"{row.base_url}/models", auth_headers(row, settings))
    if not answer.ok:
        row.status, row.healthy_at, row.message = "unhealthy", None, answer.detail
        return
    served: list[str] = []
    if isinstance(answer.body, dict) and isinstance(answer.body.get("data"), list):
        served = [str(m.get("id")) for m in answer.body["data"] if isinstance(m, dict) and m.get("id")]
    if not row.served_model and served:
        row.served_model = row.model_id = served[0]
    if row.served_model and served and row.served_model not in served:
        row.status, row.healthy_at = "unhealthy", None
        row.message = f"the server does not serve '{row.served_model}'; it serves: {', '.join(served[:20])}"
        return
    row.status, row.message = "healthy", ""
    row.healthy_at = row.healthy_at or at


def _ended(row: Deployment, settings: Settings, at: datetime, status: str, why: str) -> None:
    wait_reaped(row.pid)  # a process started here: its exit line reaches the log before the tail is read
    lines = tail(log_path(settings, row.id), FAILURE_LOG_LINES)
    row.status = status
    row.message = f"{why}; last log lines:\n{lines}" if lines else why
    row.pid, row.proc_created, row.stopped_at = None, None, at
    row.requests_before = row.requests_served


def _check_local(row: Deployment, settings: Settings, at: datetime, dead: str) -> None:
    state = process_state(row.pid, row.proc_created, row.command)
    if state != "alive":
        why = (
            f"the serving process (pid {row.pid}) is gone"
            if state == "gone"
            else f"pid {row.pid} now belongs to another program, not this deployment's process"
        )
        _ended(row, settings, at, dead, why)
        return
    base = server_url(check_host(row.host), int(row.port or 0))
    headers = auth_headers(row, settings)
    answer = health.check(f"{base}/health", headers)
    if answer.ok:
        row.status, row.message = "healthy", ""
        row.healthy_at = row.healthy_at or at
        served = health.read_request_count(f"{base}/metrics", headers)
        if served is not None:
            row.requests_served = row.requests_before + served
        return
    timeout = float(row.config.get("start_timeout_s", 300.0))
    age = (at - aware(row.started_at)).total_seconds() if row.started_at else 0.0
    if row.healthy_at is None and age < timeout:
        row.status, row.message = "starting", f"loading the model ({age:.0f} s): {answer.detail}"
    else:
        waited = f" (no healthy answer in {timeout:g} s)" if row.healthy_at is None else ""
        row.status, row.message = "unhealthy", f"health check failed{waited}: {answer.detail}"


def _checked(row: Deployment) -> bool:
    """Whether a check means anything: a local process meant to run, or a remote endpoint not stopped."""
    return row.status in RUNNING if row.kind == "local" else row.status != "stopped"


def run_check(db: Database, settings: Settings, deployment_id: str, dead: str = "failed") -> DeploymentPublic:
    """Check the deployment ``deployment_id`` now and store what was found; a dead process becomes ``dead``."""
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        if row is None:
            raise NotFoundError(f"deployment '{deployment_id}' was deleted meanwhile", param="deployment")
        was = row.status
        if _checked(row):
            at = now()
            if row.kind == "remote":
                _check_remote(row, settings, at)
            else:
                _check_local(row, settings, at, dead)
            row.checked_at = at
            session.add(row)
        public = DeploymentPublic.from_row(row, settings)
        became_bad = was in ("healthy",) and row.status in ("unhealthy", "failed", "lost")
        name, message = row.name, row.message
    if became_bad:  # after the commit: a notification (and its webhooks) for a deployment that went down
        try:
            from studio.notifications.service import notify_deployment_unhealthy

            notify_deployment_unhealthy(db, name, message or public.status, settings=settings)
        except Exception:
            log.exception("could not notify that deployment %s is %s", name, public.status)
    return public


def refresh_one(db: Database, settings: Settings, ref: str) -> DeploymentPublic:
    """Check one deployment now (health, process, requests served) and store what was found."""
    with db.session() as session:
        deployment_id = find_row(session, ref).id
    return run_check(db, settings, deployment_id, "failed")


def _check_all(db: Database, settings: Settings, dead: str) -> list[DeploymentPublic]:
    with db.session() as session:
        ids = [r.id for r in session.exec(select(Deployment).order_by(Deployment.created_at)).all()]  # type: ignore[arg-type]
    if not ids:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:  # one slow endpoint does not hold up the rest
        results = list(pool.map(lambda i: _safe_check(db, settings, i, dead), ids))
    return [r for r in results if r is not None]


def _safe_check(db: Database, settings: Settings, deployment_id: str, dead: str) -> DeploymentPublic | None:
    try:
        return run_check(db, settings, deployment_id, dead)
    except NotFoundError:
        return None


def refresh_deployments(db: Database, settings: Settings) -> list[DeploymentPublic]:
    """Check every deployment now and return them all, oldest first (the table's rows)."""
    return _check_all(db, settings, "failed")


def list_deployments(db: Database, settings: Settings, *, refresh: bool = True) -> list[DeploymentPublic]:
    """Every deployment, oldest first; checked now unless ``refresh`` is False (then as last checked)."""
    if refresh:
        return refresh_deployments(db, settings)
    with db.session() as session:
        rows = session.exec(select(Deployment).order_by(Deployment.created_at)).all()  # type: ignore[arg-type]
        return [DeploymentPublic.from_row(r, settings) for r in rows]


def reattach(db: Database, settings: Settings) -> list[DeploymentPublic]:
    """At studio start: every deployment that was running is checked again -- healthy when its process is alive,
    is the one the studio started (pid, start time and argv) and answers; *lost* (with its last log lines) when the
    pid is gone or held by another program. Returns every deployment."""
    return _check_all(db, settings, "lost")


def wait_until_ready(
    db: Database, settings: Settings, ref: str, timeout_s: float = 300.0, poll_s: float = 0.5
) -> DeploymentPublic:
    """Check ``ref`` until it leaves *starting* (healthy, failed...) or ``timeout_s`` passes; return the last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = refresh_one(db, settings, ref)
        if current.status != "starting" or time.monotonic() >= deadline:
            return current
        time.sleep(poll_s)
