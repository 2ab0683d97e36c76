"""A person creates, clones and deletes an alias in the Aliases tab (Debian chromium through Playwright)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_create_clone_delete_alias_in_the_page(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    aliases_dir = server.home / "aliases"
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Aliases").click()

    page.fill("#aliases-name textarea", "web:alias")
    page.fill("#aliases-temperature textarea", "0.3")
    page.fill("#aliases-max_tokens textarea", "40")
    page.click("#aliases-save")
    wait_for(lambda: "saved" in page.inner_text("#aliases-report"))
    assert (aliases_dir / "web--alias.yaml").is_file()
    table = page.locator("#aliases-table")
    wait_for(lambda: "web:alias" in table.inner_text())

    table.get_by_text("web:alias", exact=True).first.click()
    wait_for(lambda: page.locator("#aliases-selected textarea").input_value() == "web:alias")
    page.fill("#aliases-clone-name textarea", "web:alias-2")
    page.click("#aliases-clone")
    wait_for(lambda: "web:alias-2" in table.inner_text())
    assert (aliases_dir / "web--alias-2.yaml").is_file()

    table.get_by_text("web:alias", exact=True).first.click()
    wait_for(lambda: page.locator("#aliases-selected textarea").input_value() == "web:alias")
    page.click("#aliases-delete")
    page.wait_for_selector("#aliases-confirm-delete", state="visible")
    page.click("#aliases-confirm-delete")
    wait_for(lambda: not (aliases_dir / "web--alias.yaml").exists())
    wait_for(lambda: "web:alias-2" in table.inner_text() and table.get_by_text("web:alias", exact=True).count() == 0)
    page.screenshot(path=str(tmp_path / "aliases.png"), full_page=True)

    # cross-tab: the Playground's model picker offers the new alias
    page.get_by_role("tab", name="Playground").click()
    page.click("#playground-model input")
    wait_for(lambda: page.get_by_role("option", name="web:alias-2").count() > 0)
    (aliases_dir / "web--alias-2.yaml").unlink()


def test_alias_statistics_count_a_request_without_refresh(server, browser) -> None:  # type: ignore[no-untyped-def]
    """Issue 15, point 5: the quick statistics were read once, when the page loaded; a request served afterwards
    showed only after "Refresh". Opening the tab shows the figures as they are now."""
    import re

    import httpx
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Aliases").click()
    stats = page.locator("#aliases-stats")
    expect(stats).to_contain_text("requests in the last 24 h", timeout=30_000)
    before = int(re.search(r"(\d+) requests in the last 24 h", stats.inner_text()).group(1))  # type: ignore[union-attr]

    page.get_by_role("tab", name="Playground").click()
    reply = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2,
        },
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    page.get_by_role("tab", name="Aliases").click()
    expect(stats).to_contain_text(re.compile(rf"\b{before + 1} requests in the last 24 h"), timeout=15_000)
