"""Notifications (issue 20, point 5): a real job ending in each final state notifies its owner, the unread count and
mark-read follow each reader, and webhooks reach a loopback receiver (a failing first attempt retried with backoff,
a URL that never answers given up after the maximum attempts). Real SQLite and PostgreSQL databases, real jobs
through the queue API, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from studio.auth import Principal
from studio.db import Database
from studio.db.tables import utcnow
from studio.errors import ValidationError
from studio.jobs import queue
from studio.jobs.queue import Lease
from studio.notifications import service, webhooks
from studio.notifications.tables import Notification, WebhookDelivery
from studio.settings import Settings
from studio.users.acting import acting_as
from studio.users.service import UserService


def _settings(tmp: Path) -> Settings:
    settings = Settings(home=tmp / "home", hf_cache=tmp / "hub", api_key=None, admin_user=None)
    settings.ensure_dirs()
    return settings


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The same tests on SQLite and on a fresh PostgreSQL database (skipped when no server answers)."""
    url = f"sqlite:///{tmp_path}/studio.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def team(db: Database, tmp_path: Path) -> dict[str, Principal]:
    users = UserService(_settings(tmp_path), db)
    who = {}
    for name, role in (("ada", "admin"), ("bob", "member")):
        info = users.add(name, role=role, hf_username=name)  # no password: no slow hashing
        who[name] = Principal(name, "session", role=role, user_id=info.id)
    return who


def _end_job(db: Database, state: str, kind: str = "selftest", config: dict[str, Any] | None = None) -> str:
    """Submit a job, claim it like a worker and end it in ``state`` through the queue API."""
    job = queue.submit(db, kind, config if config is not None else {"steps": 1}, name=f"{state}-run")
    claimed = queue.claim_next(db, "unit-worker:1")
    assert claimed is not None and claimed.id == job.id
    assert queue.finish(db, Lease.of(claimed), state, message=f"it {state}")
    return job.id


# --- the notification centre ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "kind", "level"),
    [
        ("succeeded", "job.succeeded", "success"),
        ("failed", "job.failed", "error"),
        ("interrupted", "job.interrupted", "warning"),
        ("cancelled", "job.cancelled", "warning"),
    ],
)
def test_a_job_ending_notifies_its_owner_only(
    db: Database, team: dict[str, Principal], state: str, kind: str, level: str
) -> None:
    bob, ada = team["bob"], team["ada"]
    with acting_as(bob):
        job_id = _end_job(db, state)
    mine = service.for_user(db, bob.user_id)
    assert [(n.kind, n.level, n.link, n.read) for n in mine] == [(kind, level, f"job:{job_id}", False)]
    assert mine[0].title == f"selftest job '{state}-run' {state}" and mine[0].body == f"it {state}"
    assert mine[0].user_id == bob.user_id and mine[0].data["job_id"] == job_id
    assert service.for_user(db, ada.user_id) == []  # another user's job: not ada's notification
    assert service.unread_count(db, bob.user_id) == 1 and service.unread_count(db, ada.user_id) == 0
    assert [n.id for n in service.for_user(db, None)] == [mine[0].id]  # the single user / operator sees all


def test_cancelling_a_queued_job_notifies_from_the_server_side(db: Database, team: dict[str, Principal]) -> None:
    with acting_as(team["bob"]):
        job = queue.submit(db, "selftest", {"steps": 1})
        queue.request_cancel(db, job.id)
    [note] = service.for_user(db, team["bob"].user_id)
    assert (note.kind, note.level, note.body) == ("job.cancelled", "warning", "cancelled before it started")
    assert note.title == f"selftest job {job.id[:8]} cancelled"  # no name: the id


def test_a_successful_eval_and_audit_also_say_their_report_is_ready(db: Database) -> None:
    eval_id = _end_job(db, "succeeded", "eval", {"models": ["default"], "dataset": "faq", "metrics": ["perplexity"]})
    audit_id = _end_job(db, "succeeded", "audit", {})
    failed_eval = _end_job(db, "failed", "eval", {"models": ["default"], "dataset": "faq", "metrics": ["perplexity"]})
    got = [(n.kind, n.link) for n in reversed(service.for_user(db, None))]
    assert got == [
        ("job.succeeded", f"job:{eval_id}"),
        ("eval.ready", f"eval:{eval_id}"),
        ("job.succeeded", f"job:{audit_id}"),
        ("audit.ready", f"audit:{audit_id}"),
        ("job.failed", f"job:{failed_eval}"),  # a failed evaluation has no report
    ]


def test_unread_count_and_mark_read_are_per_reader(db: Database, team: dict[str, Principal]) -> None:
    bob, ada = team["bob"].user_id, team["ada"].user_id
    everyone = service.notify(db, "disk.low", "for all", level="warning")
    bobs = [service.notify(db, "job.failed", f"bob {i}", user_id=bob, level="error") for i in range(3)]
    assert service.unread_count(db, bob) == 4 and service.unread_count(db, ada) == 1
    assert service.mark_read(db, bob, [bobs[0].id, bobs[0].id, "no-such-id"]) == 1
    assert service.mark_read(db, ada, [bobs[1].id]) == 0  # not ada's to read
    assert service.unread_count(db, bob) == 3
    assert [n.title for n in service.for_user(db, bob, unread_only=True)] == ["bob 2", "bob 1", "for all"]
    assert service.mark_read(db, bob, "all") == 3
    assert service.mark_read(db, bob, "all") == 0  # a second page marking again changes nothing
    assert service.unread_count(db, bob) == 0
    assert service.unread_count(db, ada) == 1  # bob reading the shared one does not read it for ada
    assert service.unread_count(db, None) == 4  # the single user ("") has read nothing yet
    assert [n.read for n in service.for_user(db, ada)] == [False] and everyone.user_id is None


def test_since_returns_what_is_newer_oldest_first(db: Database, team: dict[str, Principal]) -> None:
    bob = team["bob"].user_id
    first = service.notify(db, "job.succeeded", "one", user_id=bob)
    time.sleep(0.01)
    service.notify(db, "job.succeeded", "two", user_id=bob)
    service.notify(db, "job.succeeded", "adas", user_id=team["ada"].user_id)
    service.notify(db, "disk.low", "three")
    assert [n.title for n in service.since(db, bob, first.created_at)] == ["two", "three"]
    assert [n.title for n in service.since(db, bob, first.created_at - timedelta(seconds=1))] == [
        "one",
        "two",
        "three",
    ]
    assert service.since(db, bob, utcnow() + timedelta(seconds=1)) == []


def test_deployment_and_disk_notifications_come_once_an_hour(db: Database) -> None:
    assert service.notify_deployment_unhealthy(db, "api", "GET /health: connection refused") is not None
    assert service.notify_deployment_unhealthy(db, "api", "still down") is None
    assert service.notify_deployment_unhealthy(db, "other", "down") is not None
    later = utcnow() + timedelta(hours=1, minutes=1)
    assert service.notify_deployment_unhealthy(db, "api", "down again", now=later) is not None
    disk = service.notify_disk_low(db, "/data", 2_000_000_000, 100_000_000_000)
    assert disk is not None and disk.level == "warning" and disk.link == "disk:/data"
    assert disk.title == "Disk nearly full: 2.0 GB free of 100.0 GB (2%) at /data"
    assert service.notify_disk_low(db, "/data", 1, 100_000_000_000) is None
    kinds = [n.kind for n in service.for_user(db, None)]
    assert kinds.count("deployment.unhealthy") == 3 and kinds.count("disk.low") == 1


def test_notify_refuses_an_unknown_level(db: Database) -> None:
    with pytest.raises(ValidationError) as err:
        service.notify(db, "job.failed", "x", level="loud")
    assert err.value.param == "level" and "info, success, warning, error" in str(err.value)


# --- webhooks -----------------------------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server answering POSTs with the scripted status codes (then 200), recording each body."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.got: list[tuple[str, dict[str, str], Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append((self.path, dict(self.headers), json.loads(body)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])
    yield r
    r.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def _deliveries(db: Database) -> list[WebhookDelivery]:
    with db.session() as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all())


def test_a_failed_webhook_is_retried_and_the_receiver_gets_the_exact_json(
    db: Database, team: dict[str, Principal], receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    webhooks.save_config(settings, f"webhooks:\n  job.failed: [{receiver.url}/hook]\n  disk.low: [{receiver.url}/x]\n")
    with acting_as(team["bob"]):
        job_id = _end_job(db, "failed")  # the hook runs without settings: the delivery pass queues its webhook
    report = webhooks.deliver_pending(db, settings)
    assert (report.queued, report.delivered, report.retrying) == (1, 0, 1)
    [first] = _deliveries(db)
    assert (first.state, first.attempts, first.status_code) == ("pending", 1, 500)
    assert first.error.startswith("attempt 1/5: HTTP 500") and "next attempt at" in first.error

    assert webhooks.deliver_pending(db, settings).retrying == 0 and len(receiver.got) == 1  # not due for 1 s
    report = webhooks.deliver_pending(db, settings, now=utcnow() + timedelta(seconds=1.5))
    assert report.delivered == 1
    [done] = _deliveries(db)
    assert (done.state, done.attempts, done.status_code, done.error) == ("delivered", 2, 200, "")

    [note] = service.for_user(db, team["bob"].user_id)
    expected = {
        "id": note.id,
        "kind": "job.failed",
        "title": "selftest job 'failed-run' failed",
        "body": "it failed",
        "link": f"job:{job_id}",
        "level": "error",
        "created_at": note.created_at.isoformat(),
        "data": {"job_id": job_id, "job_kind": "selftest", "name": "failed-run", "state": "failed"},
    }
    assert [(path, body) for path, _h, body in receiver.got] == [("/hook", expected), ("/hook", expected)]
    assert receiver.got[1][1]["x-whetstone-event"] == "job.failed"
    assert webhooks.deliver_pending(db, settings, now=utcnow() + timedelta(minutes=1)).queued == 0  # sent once
    [shown] = webhooks.recent_deliveries(db)
    assert (shown.kind, shown.state, shown.attempts) == ("job.failed", "delivered", 2)
    assert shown.url == f"{receiver.url}/hook"


def test_a_url_that_never_answers_fails_after_the_last_attempt_without_blocking(
    db: Database, receiver: Receiver, silent_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    receiver.statuses = []
    webhooks.save_config(settings, f'webhooks:\n  "*": [{silent_url}, {receiver.url}/all]\n')
    started = time.monotonic()
    note = service.notify_disk_low(db, "/data", 1, 100, settings=settings)  # queues both deliveries itself
    assert note is not None and time.monotonic() - started < 1.0  # notifying never touches the network
    assert [(d.url, d.state) for d in _deliveries(db)] == [(silent_url, "pending"), (f"{receiver.url}/all", "pending")]

    options = {"backoff_s": 0.01, "timeout_s": 0.2}
    first = webhooks.deliver_pending(db, settings, **options)  # type: ignore[arg-type]
    assert (first.delivered, first.retrying) == (1, 1)  # the good URL does not wait for the silent one
    deadline = time.monotonic() + 10
    while any(d.state == "pending" for d in _deliveries(db)):
        assert time.monotonic() < deadline
        webhooks.deliver_pending(db, settings, now=utcnow() + timedelta(seconds=1), **options)  # type: ignore[arg-type]
    silent, good = _deliveries(db)
    assert (silent.state, silent.attempts, silent.status_code) == ("failed", webhooks.MAX_ATTEMPTS, None)
    assert silent.error == "gave up after 5 attempts; last: no answer within the timeout"
    assert (good.state, good.attempts) == ("delivered", 1) and len(receiver.got) == 1


def test_the_delivery_thread_sends_in_the_background(db: Database, receiver: Receiver, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    receiver.statuses = []
    webhooks.save_config(settings, f"webhooks:\n  job.succeeded: {receiver.url}/one\n")  # one URL without a list
    stop = webhooks.start_delivery_thread(db, settings, interval_s=0.05)
    try:
        _end_job(db, "succeeded")
        deadline = time.monotonic() + 10
        while not receiver.got:
            assert time.monotonic() < deadline, "the delivery thread did not send"
            time.sleep(0.05)
    finally:
        stop()
    assert receiver.got[0][0] == "/one" and receiver.got[0][2]["kind"] == "job.succeeded"


@pytest.mark.parametrize(
    ("text", "needle", "param"),
    [
        ("webhooks:\n  job.failed: [ftp://example.com/x]\n", "webhooks.job.failed[0]: must be an http://", None),
        ("webhooks:\n  job.done: [http://example.com]\n", "unknown notification kind 'job.done'", "webhooks"),
        ("hooks: {}\n", "hooks: Extra inputs are not permitted", "hooks"),
        ("webhooks: [\n", "not valid YAML", "webhooks"),
    ],
)
def test_a_bad_config_is_refused_with_the_field_and_not_written(
    tmp_path: Path, text: str, needle: str, param: str | None
) -> None:
    settings = _settings(tmp_path)
    webhooks.save_config(settings, "webhooks: {}\n")
    with pytest.raises(ValidationError) as err:
        webhooks.save_config(settings, text)
    assert needle in str(err.value)
    assert err.value.param == (param or "webhooks.job.failed[0]")
    assert webhooks.config_path(settings).read_text() == "webhooks: {}\n"


def test_config_text_is_a_template_until_saved(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    template = webhooks.config_text(settings)
    assert "job.succeeded, job.failed" in template and webhooks.parse_config(template).webhooks == {}
    webhooks.save_config(settings, 'webhooks:\n  "*": [https://hooks.example.com/a]\n')
    config = webhooks.load_config(settings)
    assert config.urls_for("eval.ready") == ["https://hooks.example.com/a"]
    assert not list(settings.home.glob(".notifications.yaml.*"))  # no temporary file left behind


def test_notifications_made_before_the_config_was_saved_are_not_replayed(db: Database, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    old = service.notify(db, "disk.low", "before")
    time.sleep(0.05)
    webhooks.save_config(settings, '"webhooks":\n  disk.low: [http://127.0.0.1:9/x]\n')
    new = service.notify(db, "disk.low", "after")
    webhooks._queue_missing(db, settings, utcnow(), webhooks.DeliveryReport())
    assert [d.notification_id for d in _deliveries(db)] == [new.id]
    with db.session() as session:
        assert session.get(Notification, old.id) is not None


def test_a_nearly_full_disk_notifies_once_an_hour(db: Database, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert webhooks.check_disk(db, settings, low_fraction=0.0) is None  # plenty of room by that measure
    first = webhooks.check_disk(db, settings, low_fraction=1.01)  # every volume is "nearly full" by this one
    assert first is not None and first.kind == "disk.low" and first.user_id is None
    assert webhooks.check_disk(db, settings, low_fraction=1.01) is None  # said within the hour


def test_the_disk_low_threshold_comes_from_the_setting(db: Database, tmp_path: Path) -> None:
    """STUDIO_DISK_LOW_PERCENT sets the threshold (0 turns the check off); out of range is refused by name."""
    off = _settings(tmp_path).model_copy(update={"disk_low_percent": 0.0})
    assert webhooks.check_disk(db, off) is None
    everything = _settings(tmp_path).model_copy(update={"disk_low_percent": 100.0})  # any used volume is below
    note = webhooks.check_disk(db, everything)
    assert note is not None and note.kind == "disk.low"
    with pytest.raises(ValueError, match="disk_low_percent"):
        Settings(home=tmp_path, disk_low_percent=101)


def test_a_deployment_that_goes_down_notifies(db: Database, tmp_path: Path) -> None:
    """A remote deployment answering /v1/models is healthy; once its server stops, the next check marks it
    unhealthy and everyone hears about it."""
    from studio.deploy.checks import run_check
    from studio.deploy.service import add_remote

    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "m1", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = _settings(tmp_path)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        deployment = add_remote(db, settings, {"name": "lab", "base_url": url, "model": "m1"})
        assert run_check(db, settings, deployment.id).status == "healthy"
    finally:
        server.shutdown()
        server.server_close()
    assert run_check(db, settings, deployment.id).status == "unhealthy"
    with db.session() as s:
        found = s.exec(select(Notification).where(col(Notification.kind) == "deployment.unhealthy")).all()
    assert [n.link for n in found] == ["deployment:lab"]
