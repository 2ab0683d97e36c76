"""Two people of one team on one studio (issue 19): each signs in with their own account in their own browser,
both chat at the same moment, each reply streams, and each sees only their own conversations -- in the UI's
history and through the REST API with their own session. The request log names who asked, and the two
generations overlapped in time (they ran concurrently, not one after the other)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT, ServerHandle, start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADA, ADA_PW = "ada", "ada-password-1"
BOB, BOB_PW = "bob", "bob-password-2"


@pytest.fixture(scope="module")
def team_server(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, str]]:
    """The session's home (its converted model) with a database of its own, so the other servers stay single-user:
    the first admin from the environment, a member added with the CLI before the start."""
    folder = tmp_path_factory.mktemp("team-server")
    (folder / "gradio-tmp").mkdir()
    db_url = f"sqlite:///{folder / 'team.db'}"
    env = {"STUDIO_HOME": str(studio_home), "STUDIO_DATABASE_URL": db_url, "HF_HUB_OFFLINE": "1"}
    added = subprocess.run(
        [sys.executable, "-m", "studio", "users", "add", BOB, "--role", "member", "--password-stdin"],
        input=BOB_PW + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    handle = start_server(
        studio_home,
        folder / "server.log",
        env_extra={
            **env,
            "STUDIO_ADMIN_USER": ADA,
            "STUDIO_ADMIN_PASSWORD": ADA_PW,
            "GRADIO_TEMP_DIR": str(folder / "gradio-tmp"),
        },
        args=["--no-worker"],
    )
    yield handle, db_url
    stop_server(handle)


def _sign_in(browser, url: str, name: str, password: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url + "/")
    expect(page.locator("#login-form")).to_be_visible(timeout=30_000)
    page.fill("#username", name)
    page.fill("#key", password)
    page.click("#login-submit")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    page.locator("#playground-temperature input[type=number]").fill("0")
    page.locator("#playground-temperature input[type=number]").press("Enter")
    return context, page


def test_two_users_chat_at_once_and_see_only_their_own_history(team_server, browser) -> None:  # type: ignore[no-untyped-def]
    server, db_url = team_server
    ada_ctx, ada = _sign_in(browser, server.url, ADA, ADA_PW)
    bob_ctx, bob = _sign_in(browser, server.url, BOB, BOB_PW)
    # a wrong password is refused with the login page's message
    other = browser.new_context().new_page()
    other.goto(server.url + "/login")
    other.fill("#username", BOB)
    other.fill("#key", "not-bobs-password")
    other.click("#login-submit")
    expect(other.locator("#login-error")).to_contain_text("Wrong user name or password")

    # ada's answer is long (a count to fifty), so bob's question, sent a moment later, arrives while it runs
    ada.fill("#playground-input textarea", "Count from one to fifty, one number per line.")
    bob.fill("#playground-input textarea", "Name three colours of the rainbow.")
    ada.click("#playground-send")
    bob.click("#playground-send")
    expect(ada.locator("#playground-stats")).to_contain_text("finish:", timeout=120_000)
    expect(bob.locator("#playground-stats")).to_contain_text("finish:", timeout=120_000)
    expect(ada.locator('#playground-chat [data-testid="bot"]').last).to_contain_text("1")

    for page, mine, theirs in (
        (ada, "Count from one", "colours of the rainbow"),
        (bob, "colours of the rainbow", "Count from one"),
    ):
        page.get_by_role("tab", name="Conversations").click()
        page.click("#playground-conversations-refresh")
        table = page.locator("#playground-conversations")
        deadline = time.monotonic() + 30
        while mine not in table.inner_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mine in table.inner_text()
        assert theirs not in table.inner_text(), "a user's history lists another user's conversation"

    # the REST API with each browser's own session cookie says the same
    for context, mine, theirs in ((ada_ctx, "Count from one", "rainbow"), (bob_ctx, "rainbow", "Count from one")):
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        listed = httpx.get(server.url + "/api/inference/conversations", cookies=cookies, timeout=30)
        assert listed.status_code == 200, listed.text
        titles = " ".join(c["title"] for c in listed.json()["data"])
        assert mine in titles and theirs not in titles

    # the request log names who asked, and the two generations overlapped in time
    from sqlmodel import Session, create_engine, select

    from studio.db.tables import RequestLog
    from studio.users.tables import User

    engine = create_engine(db_url)
    with Session(engine) as s:
        ids = {u.name: u.id for u in s.exec(select(User)).all()}
        rows = [r for r in s.exec(select(RequestLog)).all() if r.endpoint.startswith("playground")]
    engine.dispose()
    by_user = {r.user_id: r for r in rows}
    assert set(by_user) >= {ids[ADA], ids[BOB]}, [(r.user_id, r.endpoint) for r in rows]
    a, b = by_user[ids[ADA]], by_user[ids[BOB]]
    a_start, b_start = (
        a.created_at - timedelta(milliseconds=a.total_ms),
        b.created_at - timedelta(milliseconds=b.total_ms),
    )
    assert a_start < b.created_at and b_start < a.created_at, "the two users' generations ran one after the other"
    ada_ctx.close()
    bob_ctx.close()
