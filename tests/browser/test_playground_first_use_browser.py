"""A new user's first minutes in the Playground, in chromium: the message box sends on Enter (as its
placeholder says) and keeps Shift+Enter for a new line (issue 15, point 1); at phone width the conversation and
the message box come first and the model's name is not cut (issue 15, point 14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]

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


def test_at_phone_width_the_conversation_and_message_box_come_first(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """At 390x844 the chat sat ~700 px down, below the model form and six stacked buttons, and the model's name
    was cut to "HuggingFaceTB/Sı". The first screen now shows the conversation, the message box and Send; the
    loading controls follow, the model's name whole. STUDIO_UPDATE_SCREENSHOTS=1 writes the screenshots to
    docs/screenshots/."""
    page = open_playground(server, browser, 390, 844)
    chat, box, send = (
        page.locator("#playground-chat"),
        page.locator("#playground-input textarea"),
        page.locator("#playground-send"),
    )
    for element in (chat, box, send):
        expect(element).to_be_in_viewport(ratio=1.0)  # wholly on the first screen, without scrolling
    assert page.evaluate("window.scrollY") == 0
    model = page.locator("#playground-model input")
    expect(model).to_have_value("HuggingFaceTB/SmolLM2-135M-Instruct")
    scroll_width, client_width = model.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert scroll_width <= client_width, f"the model's name is cut: {scroll_width} px of text in {client_width} px"
    load = page.locator("#playground-load").bounding_box()
    chat_box = chat.bounding_box()
    assert load is not None and chat_box is not None and load["y"] > chat_box["y"] + chat_box["height"]
    # docs/screenshots/ is refreshed on request only: a test run leaves the checkout as it was
    shots = ROOT / "docs" / "screenshots" if os.environ.get("STUDIO_UPDATE_SCREENSHOTS") else tmp_path
    page.screenshot(path=str(shots / "playground-phone.png"))
    page.locator("#playground-model-row").screenshot(path=str(shots / "playground-phone-model.png"))  # scrolls
    assert (shots / "playground-phone.png").stat().st_size > 10_000

    # a wide screen keeps the loading controls above the conversation
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator("#playground-load")).to_be_in_viewport()
    wide_load, wide_chat = page.locator("#playground-load").bounding_box(), chat.bounding_box()
    assert wide_load is not None and wide_chat is not None and wide_load["y"] < wide_chat["y"]
