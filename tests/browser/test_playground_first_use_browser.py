"""A new user's first minutes in the Playground, in chromium: the message box sends on Enter (as its
placeholder says) and keeps Shift+Enter for a new line (issue 15, point 1)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def open_playground(server, browser, width: int, height: int):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server.url + "/")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    return page


def test_enter_sends_the_message_and_shift_enter_adds_a_line(server, browser) -> None:  # type: ignore[no-untyped-def]
    page = open_playground(server, browser, 1400, 1000)
    for name, value in (("temperature", "0"), ("max_tokens", "12")):
        page.locator(f"#playground-{name} input[type=number]").fill(value)
        page.locator(f"#playground-{name} input[type=number]").press("Enter")
    box = page.locator("#playground-input textarea")
    expect(box).to_have_attribute("placeholder", "Type a message and press Enter (Shift+Enter for a new line)")
    users = page.locator('#playground-chat [data-testid="user"]')
    bots = page.locator('#playground-chat [data-testid="bot"]')

    box.click()
    box.press_sequentially("What is the capital of France?")
    box.press("Shift+Enter")
    box.press_sequentially("Answer in one sentence.")
    # Shift+Enter is a new line in the box, and nothing was sent
    expect(box).to_have_value("What is the capital of France?\nAnswer in one sentence.")
    expect(users).to_have_count(0)

    box.press("Enter")
    expect(users).to_have_count(1, timeout=30_000)
    expect(users.first).to_contain_text("Answer in one sentence.")
    expect(box).to_have_value("")
    expect(page.locator("#playground-stats")).to_contain_text("finish:", timeout=120_000)
    expect(bots).to_have_count(1)
    expect(bots.last).to_contain_text("Paris")
