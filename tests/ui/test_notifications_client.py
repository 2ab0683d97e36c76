"""The notification bell (issue 20, point 5) through `gradio_client` and Gradio's queue against the whole app served
by uvicorn: a notification stored in the database shows in ``notifications_list`` with the unread count, only for
its user; ``notifications_read`` clears the count; the poll behind the toasts sends a toast for a new one; the
webhook configuration is saved by an admin and refused to a member."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from gradio_client import Client

from studio.notifications import service, webhooks
from studio.settings import Settings
from tests.api.live_server import live_server

pytestmark = pytest.mark.slow


@dataclass
class Team:
    url: str
    ctx: Any
    tokens: dict[str, str]
    ids: dict[str, str]

    def client(self, name: str) -> Client:
        return Client(self.url, verbose=False, headers=self.headers(name))

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """A studio with the admin ada and the member bob, each with a personal API token."""
    from app import create_app

    tmp = tmp_path_factory.mktemp("notifications")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio-tmp"))
    app, ctx = create_app(Settings(home=tmp / "home", hf_cache=tmp / "hub"))
    try:
        with live_server(app, lifespan="on", graceful_s=2) as url:
            tokens, ids = {}, {}
            for name, role in (("ada", "admin"), ("bob", "member")):
                ids[name] = ctx.users.add(name, role=role, password=f"{name}-password-123").id
                tokens[name], _ = ctx.users.create_token(name, "test-suite")
            yield Team(url, ctx, tokens, ids)
    finally:
        ctx.close()
        mp.undo()


def _rows(table: Any) -> list[list[Any]]:
    """A Dataframe output as gradio_client returns it (``{"headers", "data"}``)."""
    return [list(r) for r in table["data"]] if isinstance(table, dict) else [list(r) for r in table]


def test_a_notification_shows_in_the_list_with_the_unread_count_until_read(team: Team) -> None:
    db = team.ctx.db
    service.mark_read(db, team.ids["bob"], "all")
    mine = service.notify(db, "job.failed", "finetune job 'nightly' failed", link="job:abc", level="error",
                          user_id=team.ids["bob"])  # fmt: skip
    service.notify(db, "disk.low", "Disk nearly full", link="disk:/data", level="warning")
    service.notify(db, "job.succeeded", "ada's job", user_id=team.ids["ada"])
    bob = team.client("bob")

    unread, table = bob.predict(api_name="/notifications_list")
    rows = _rows(table)
    assert unread == 2
    assert [r[1:] for r in rows[:2]] == [
        ["warning", "Disk nearly full", "disk:/data", "new"],
        ["error", "finetune job 'nightly' failed", "job:abc", "new"],
    ]
    assert "ada's job" not in [r[2] for r in rows]  # another user's notification
    assert rows[1][0] == mine.created_at.strftime("%Y-%m-%d %H:%M:%S")

    unread, table = bob.predict(api_name="/notifications_read")
    assert unread == 0 and {r[4] for r in _rows(table)} == {""}
    assert service.unread_count(db, team.ids["bob"]) == 0
    assert service.unread_count(db, team.ids["ada"]) == 2  # bob's reading is his own
    assert bob.predict(api_name="/notifications_list")[0] == 0


def _poll(team: Team, name: str, session_hash: str) -> tuple[list[tuple[str, str, str]], list[Any]]:
    """One ``notifications_poll`` through Gradio's queue, as the page's timer sends it: (toasts, outputs)."""
    config = httpx.get(f"{team.url}/config", headers=team.headers(name), timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "notifications_poll")
    joined = httpx.post(
        f"{team.url}/gradio_api/queue/join",
        json={"data": [None], "fn_index": fn_index, "session_hash": session_hash, "event_data": None},
        headers=team.headers(name),
        timeout=30,
    )
    assert joined.status_code == 200, joined.text
    toasts: list[tuple[str, str, str]] = []
    with httpx.stream(
        "GET", f"{team.url}/gradio_api/queue/data", params={"session_hash": session_hash},
        headers=team.headers(name), timeout=30,
    ) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "log":
                toasts.append((msg.get("level"), msg.get("title"), msg.get("log")))
            if msg.get("msg") == "process_completed":
                assert msg.get("success"), msg
                return toasts, msg["output"]["data"]
    raise AssertionError("the poll did not complete")


def test_the_poll_toasts_a_new_notification_once(team: Team) -> None:
    session = uuid.uuid4().hex
    first, _ = _poll(team, "bob", session)  # the page's first tick: from now on
    assert first == []
    service.notify(team.ctx.db, "job.failed", "dpo job 'x' failed", link="job:x1", level="error",
                   user_id=team.ids["bob"])  # fmt: skip
    service.notify(team.ctx.db, "eval.ready", "ada's report", user_id=team.ids["ada"])
    toasts, outputs = _poll(team, "bob", session)
    assert toasts == [("warning", "Job failed", "dpo job 'x' failed (job:x1)")]
    bell, unread = outputs[-2:]  # the bell's text and the count
    assert unread >= 1 and bell == f"Notifications ({unread})"
    again, _ = _poll(team, "bob", session)
    assert again == []  # shown once per page


def test_only_an_admin_saves_webhooks_and_sees_deliveries(team: Team) -> None:
    text = 'webhooks:\n  "*": [http://127.0.0.1:9/all]\n'
    ada = team.client("ada")
    assert ada.predict(text, api_name="/notifications_webhooks_save") is not None
    assert webhooks.load_config(team.ctx.settings).urls_for("disk.low") == ["http://127.0.0.1:9/all"]
    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        ada.predict("hooks: {}\n", api_name="/notifications_webhooks_save")
    note = service.notify_disk_low(team.ctx.db, "/webhook-test", 1, 100, settings=team.ctx.settings)
    assert note is not None
    row = _rows(ada.predict(api_name="/notifications_deliveries"))[0]  # newest first
    assert row[1:4] == ["disk.low", note.title, "http://127.0.0.1:9/all"]
    assert row[4] in ("pending", "failed")  # port 9 (discard) refuses: never delivered

    bob = team.client("bob")
    with pytest.raises(Exception):  # noqa: B017 (the front door's 403 or the handler's refusal)
        bob.predict("webhooks: {}\n", api_name="/notifications_webhooks_save")
    with pytest.raises(Exception):  # noqa: B017
        bob.predict(api_name="/notifications_deliveries")
    assert webhooks.config_path(team.ctx.settings).read_text() == text  # unchanged by bob
