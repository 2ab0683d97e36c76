"""A person opening a studio that has a key: the login page comes first, a wrong key is refused, the right one
opens the UI, and the UI's own calls (the Gradio queue) work with the session cookie -- a chat streams a reply."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_KEY

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_login_then_chat(keyed_server, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(keyed_server.url + "/")
    expect(page.locator("#login-form")).to_be_visible(timeout=30_000)
    assert "/login" in page.url

    page.fill("#key", "not-the-key")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("Wrong key")

    page.fill("#key", TEST_KEY)
    page.click("#login-submit")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)

    page.locator("#playground-temperature input[type=number]").fill("0")
    page.locator("#playground-temperature input[type=number]").press("Enter")
    page.fill("#playground-input textarea", "What is the capital of France?")
    page.click("#playground-send")
    expect(page.locator("#playground-stats")).to_contain_text("finish:", timeout=90_000)
    expect(page.locator('#playground-chat [data-testid="bot"]').last).to_contain_text("Paris")
