"""Outgoing webhooks: each notification POSTed as JSON to the URLs configured for its kind.

The configuration is ``STUDIO_HOME/notifications.yaml``, written by an admin (the UI's Webhooks panel saves it
through :func:`save_config`)::

    webhooks:
      job.failed: [https://hooks.example.com/abc]
      "*": [http://127.0.0.1:9000/all]        # every kind

Lifecycle of one delivery (a ``webhook_delivery`` row, one per notification and URL):

- queued ``pending`` with 0 attempts: by :func:`studio.notifications.service.notify` when it was given settings,
  otherwise by :func:`deliver_pending`, which queues deliveries for the notifications that have none (those made
  in a job's process, which has no settings at hand). It looks only at notifications made after the configuration
  was last saved and within the last hour, so saving a new URL does not replay older events.
- :func:`deliver_pending` (run every second by the server's delivery thread) claims each due delivery with one
  guarded UPDATE (``attempts`` +1 where it is still ``pending`` with the attempts it read: of two claimers one
  wins) and POSTs the JSON body. A 2xx answer makes it ``delivered``; anything else (another status, a refused
  connection, no answer within the timeout) is retried after ``backoff_s * 2**(attempts-1)`` seconds counted from
  the last attempt (``updated_at``), 1, 2, 4, 8 s by default, and after ``max_attempts`` it is ``failed``. The
  ``error`` column says what the last attempt got and, while pending, when the next one is due.

Nothing here raises into the code that made the notification: jobs never wait for a webhook.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import exists, update
from sqlmodel import col, select

from studio import __version__
from studio.db.engine import Database
from studio.db.tables import utcnow
from studio.errors import ValidationError
from studio.files import write_text_atomic
from studio.jobs.queue import as_utc
from studio.notifications.service import KINDS
from studio.notifications.tables import Notification, WebhookDelivery
from studio.settings import Settings

log = logging.getLogger(__name__)

CONFIG_NAME = "notifications.yaml"
ANY_KIND = "*"
DEFAULT_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 5
BACKOFF_S = 1.0
FANOUT_WINDOW = timedelta(hours=1)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY: Any = WebhookDelivery.__table__  # type: ignore[attr-defined]

TEMPLATE = """\
# Outgoing webhooks: each notification of a kind is POSTed as JSON to the URLs listed under that kind
# ("*": every kind). Kinds: {kinds}.
# Body: {{"id", "kind", "title", "body", "link", "level", "created_at", "data"}}. Failed posts are retried
# 5 times (after 1, 2, 4, 8 s).
webhooks: {{}}
#  job.failed: [https://hooks.example.com/studio]
#  "*": [http://127.0.0.1:9000/events]
"""


def _check_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host; got {value!r}")
    if any(c.isspace() for c in value.strip()):
        raise ValueError(f"a URL has no spaces; got {value!r}")
    return value.strip()


WebhookUrl = Annotated[str, Field(max_length=2048), AfterValidator(_check_url)]


class WebhooksConfig(BaseModel):
    """``notifications.yaml``: the webhook URLs per notification kind (``"*"``: every kind)."""

    model_config = ConfigDict(extra="forbid")

    webhooks: dict[str, list[WebhookUrl]] = Field(
        default_factory=dict,
        description="Notification kind (job.succeeded, job.failed, ..., or '*' for all) -> URLs to POST it to.",
    )

    @field_validator("webhooks", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            for kind, urls in list(value.items()):
                if kind not in KINDS and kind != ANY_KIND:
                    raise ValueError(f"unknown notification kind {kind!r}; kinds: {', '.join(KINDS)}, or '*'")
                if isinstance(urls, str):  # one URL written without a list
                    value[kind] = [urls]
        return value

    def urls_for(self, kind: str) -> list[str]:
        """The URLs a notification of ``kind`` goes to (its own, then those of ``"*"``), each once."""
        found = [*self.webhooks.get(kind, []), *self.webhooks.get(ANY_KIND, [])]
        return list(dict.fromkeys(found))


def config_path(settings: Settings) -> Path:
    """``STUDIO_HOME/notifications.yaml``."""
    return settings.home / CONFIG_NAME


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "webhooks"


def parse_config(text: str, source: str = CONFIG_NAME) -> WebhooksConfig:
    """Validate YAML text as a :class:`WebhooksConfig`; the error names each bad field."""
    try:
        data = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML: {exc}", param="webhooks") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{source}: must be a YAML mapping with a 'webhooks:' key", param="webhooks")
    try:
        return WebhooksConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [f"{_where(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        first = _where(tuple(exc.errors()[0]["loc"])) if exc.errors() else "webhooks"
        raise ValidationError(f"{source}: " + "; ".join(problems), param=first) from None


def load_config(settings: Settings) -> WebhooksConfig:
    """The saved configuration (none saved: no webhooks)."""
    path = config_path(settings)
    if not path.is_file():
        return WebhooksConfig()
    return parse_config(path.read_text(encoding="utf-8"), str(path))


def config_text(settings: Settings) -> str:
    """The configuration file's text, or a commented template when there is none."""
    path = config_path(settings)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return TEMPLATE.format(kinds=", ".join(KINDS))


def save_config(settings: Settings, text: str) -> WebhooksConfig:
    """Validate ``text`` and write it to ``notifications.yaml`` atomically (nothing is written when invalid)."""
    config = parse_config(text)
    write_text_atomic(config_path(settings), text if text.endswith("\n") else text + "\n")
    return config


def deliveries_for(settings: Settings, notification: Notification) -> list[WebhookDelivery]:
    """Unsaved pending deliveries of ``notification``, one per URL configured for its kind."""
    urls = load_config(settings).urls_for(notification.kind)
    return [WebhookDelivery(notification_id=notification.id, url=url) for url in urls]


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON body POSTed for ``notification``."""
    return {
        "id": notification.id,
        "kind": notification.kind,
        "title": notification.title,
        "body": notification.body,
        "link": notification.link,
        "level": notification.level,
        "created_at": as_utc(notification.created_at).isoformat(),
        "data": notification.data or {},
    }


def next_attempt_at(delivery: WebhookDelivery, backoff_s: float = BACKOFF_S) -> datetime | None:
    """When a pending delivery is due (None: it is not pending). A new one is due at once."""
    if delivery.state != PENDING:
        return None
    if delivery.attempts == 0:
        return as_utc(delivery.created_at)
    return as_utc(delivery.updated_at) + timedelta(seconds=backoff_s * 2 ** (delivery.attempts - 1))


@dataclass
class DeliveryReport:
    """What one :func:`deliver_pending` pass did."""

    queued: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    config_error: str = ""


def _queue_missing(db: Database, settings: Settings, moment: datetime, report: DeliveryReport) -> None:
    """Queue deliveries for recent notifications that have none (made where no settings were at hand)."""
    path = config_path(settings)
    if not path.is_file():
        return
    try:
        config = load_config(settings)
    except ValidationError as exc:
        report.config_error = exc.message
        return
    if not config.webhooks:
        return
    saved = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    cutoff = max(saved, moment - FANOUT_WINDOW)
    has_delivery = exists().where(col(WebhookDelivery.notification_id) == col(Notification.id))
    query = select(Notification).where(col(Notification.created_at) > cutoff, ~has_delivery)
    with db.session() as session:
        for notification in session.exec(query).all():
            for url in config.urls_for(notification.kind):
                session.add(WebhookDelivery(notification_id=notification.id, url=url))
                report.queued += 1


def _claim(db: Database, delivery: WebhookDelivery, moment: datetime) -> bool:
    with db.engine.begin() as conn:
        result = conn.execute(
            update(DELIVERY)
            .where(
                DELIVERY.c.id == delivery.id,
                DELIVERY.c.state == PENDING,
                DELIVERY.c.attempts == delivery.attempts,
            )
            .values(attempts=delivery.attempts + 1, updated_at=moment, error="sending")
        )
    return bool(result.rowcount == 1)


def _post(client: httpx.Client, url: str, body: bytes, kind: str, delivery_id: int) -> tuple[int | None, str]:
    """(status code or None, error text; "" when delivered)."""
    headers = {
        "content-type": "application/json",
        "user-agent": f"whetstone-studio/{__version__}",
        "x-whetstone-event": kind,
        "x-whetstone-delivery": str(delivery_id),
    }
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return None, "no answer within the timeout"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def deliver_pending(
    db: Database,
    settings: Settings,
    now: datetime | None = None,
    *,
    backoff_s: float = BACKOFF_S,
    max_attempts: int = MAX_ATTEMPTS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DeliveryReport:
    """One pass: queue deliveries for new notifications, then POST every due delivery (in parallel), marking
    each delivered, pending again (with the time of its next attempt) or failed after ``max_attempts``."""
    moment = as_utc(now) if now is not None else utcnow()
    report = DeliveryReport()
    _queue_missing(db, settings, moment, report)
    with db.session() as session:
        pending = session.exec(
            select(WebhookDelivery, Notification)  # type: ignore[call-overload]
            .join(Notification, col(Notification.id) == col(WebhookDelivery.notification_id))
            .where(col(WebhookDelivery.state) == PENDING)
            .order_by(col(WebhookDelivery.id))
        ).all()
    due = [(d, n) for d, n in pending if d.attempts == 0 or (next_attempt_at(d, backoff_s) or moment) <= moment]
    claimed = [(d, n) for d, n in due if _claim(db, d, moment)]
    if not claimed:
        return report
    started = time.monotonic()

    with (
        httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
        ThreadPoolExecutor(max_workers=min(8, len(claimed)), thread_name_prefix="webhook") as pool,
    ):

        def send(pair: tuple[WebhookDelivery, Notification]) -> tuple[int | None, str]:
            delivery, notification = pair
            body = json.dumps(payload(notification)).encode()
            return _post(client, delivery.url, body, notification.kind, delivery.id or 0)

        answers = list(pool.map(send, claimed))
    finished = moment + timedelta(seconds=time.monotonic() - started)
    for (delivery, _notification), (status, error) in zip(claimed, answers, strict=True):
        attempt = delivery.attempts + 1
        values: dict[str, Any] = {"status_code": status, "updated_at": finished}
        if not error:
            values.update(state=DELIVERED, error="")
            report.delivered += 1
        elif attempt >= max_attempts:
            values.update(state=FAILED, error=f"gave up after {attempt} attempts; last: {error}")
            report.failed += 1
            log.warning("webhook %s for notification %s failed: %s", delivery.url, delivery.notification_id, error)
        else:
            retry_at = finished + timedelta(seconds=backoff_s * 2 ** (attempt - 1))
            at = retry_at.isoformat(timespec="seconds")
            values.update(error=f"attempt {attempt}/{max_attempts}: {error}; next attempt at {at}")
            report.retrying += 1
        with db.engine.begin() as conn:
            conn.execute(update(DELIVERY).where(DELIVERY.c.id == delivery.id).values(**values))
    return report


@dataclass(frozen=True)
class DeliveryPublic:
    """One webhook delivery with its notification's kind and title."""

    id: int
    notification_id: str
    kind: str
    title: str
    url: str
    state: str
    attempts: int
    status_code: int | None
    error: str
    updated_at: datetime


def recent_deliveries(db: Database, limit: int = 50) -> list[DeliveryPublic]:
    """The newest deliveries first."""
    with db.session() as session:
        rows = session.exec(
            select(WebhookDelivery, Notification)  # type: ignore[call-overload]
            .join(Notification, col(Notification.id) == col(WebhookDelivery.notification_id))
            .order_by(col(WebhookDelivery.id).desc())
            .limit(max(1, limit))
        ).all()
    return [
        DeliveryPublic(
            id=d.id or 0,
            notification_id=d.notification_id,
            kind=n.kind,
            title=n.title,
            url=d.url,
            state=d.state,
            attempts=d.attempts,
            status_code=d.status_code,
            error=d.error,
            updated_at=as_utc(d.updated_at),
        )
        for d, n in rows
    ]


DISK_CHECK_EVERY_S = 60.0


def check_disk(db: Database, settings: Settings, low_fraction: float | None = None) -> Any:
    """Notify everyone (once an hour at most) when the volume holding STUDIO_HOME has less than ``low_fraction``
    free (default: ``STUDIO_DISK_LOW_PERCENT``, 5%; 0 turns the check off); returns the notification, or None."""
    import shutil

    from studio.notifications.service import notify_disk_low

    if low_fraction is None:
        low_fraction = settings.disk_low_percent / 100.0
    if low_fraction <= 0:
        return None
    usage = shutil.disk_usage(settings.home)
    if usage.total and usage.free / usage.total < low_fraction:
        return notify_disk_low(db, str(settings.home), usage.free, usage.total, settings=settings)
    return None


def start_delivery_thread(
    db: Database, settings: Settings, interval_s: float = 1.0, **options: Any
) -> Callable[[], None]:
    """Run :func:`deliver_pending` every ``interval_s`` in a daemon thread; returns the function that stops it
    (``options``: its ``backoff_s``, ``max_attempts``, ``timeout_s``)."""
    stopping = threading.Event()

    def loop() -> None:
        last_error = ""
        disk_checked = 0.0
        while not stopping.wait(interval_s):
            if time.monotonic() - disk_checked >= DISK_CHECK_EVERY_S:
                disk_checked = time.monotonic()
                try:
                    check_disk(db, settings)
                except Exception:
                    log.exception("could not check the free disk space")
            try:
                report = deliver_pending(db, settings, **options)
            except Exception:  # the database is away for a moment: try again next time
                log.exception("webhook delivery pass failed")
                continue
            if report.config_error != last_error and report.config_error:
                log.warning("webhooks not queued: %s", report.config_error)
            last_error = report.config_error

    thread = threading.Thread(target=loop, name="webhook-delivery", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(timeout=float(options.get("timeout_s", DEFAULT_TIMEOUT_S)) + 2)

    return stop
