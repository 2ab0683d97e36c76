"""The complete Playground in chromium: load a model, stream a reply, open the token view and the attention
heat map, switch between saved conversations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#playground-input textarea", text)
    page.click("#playground-send")
    wait_for(lambda: "finish:" in page.inner_text("#playground-stats"))


def test_load_stream_token_view_attention_conversations(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)

    page.click("#playground-load")
    wait_for(lambda: "loaded" in page.inner_text("#playground-load-status"))
    assert "SmolLM2" in page.inner_text("#playground-load-status")

    page.locator("#playground-temperature input[type=number]").fill("0")
    page.locator("#playground-temperature input[type=number]").press("Enter")
    send(page, "What is the capital of France?")
    assert "Paris" in page.locator('#playground-chat [data-testid="bot"]').last.inner_text()

    # token view: coloured tokens with their alternatives, and the log-probability chart
    page.get_by_role("tab", name="Token view & attention").click()
    page.click("#playground-token-view-btn")
    wait_for(lambda: page.locator("#playground-token-view .wt-tok").count() > 3)
    assert "Paris" in page.inner_text("#playground-token-view")
    wait_for(lambda: page.locator("#playground-logprob-plot .plot-container, #playground-logprob-plot svg").count() > 0)

    # attention heat map, recomputed with eager attention
    page.click("#playground-attention-btn")
    wait_for(lambda: "30" in page.inner_text("#playground-attention-summary"), timeout=90)
    wait_for(
        lambda: page.locator("#playground-attention-plot .plot-container, #playground-attention-plot svg").count() > 0
    )
    page.screenshot(path=str(tmp_path / "analysis.png"), full_page=True)

    # a second conversation, then switch back to the first one
    page.get_by_role("tab", name="Conversations").click()
    page.click("#playground-conversation-new")
    wait_for(lambda: "New conversation" in page.inner_text("#playground-active-conversation"))
    page.get_by_role("tab", name="Chat").click()
    send(page, "Name a colour.")
    page.get_by_role("tab", name="Conversations").click()
    table = page.locator("#playground-conversations")
    wait_for(lambda: "What is the capital of France?" in table.inner_text() and "Name a colour." in table.inner_text())
    table.get_by_text("What is the capital of France?").filter(visible=True).first.click()
    wait_for(lambda: "capital of France" in page.inner_text("#playground-active-conversation"))
    page.get_by_role("tab", name="Chat").click()
    wait_for(lambda: "Paris" in page.inner_text("#playground-chat"))
    assert "Name a colour." not in page.inner_text("#playground-chat")
    page.screenshot(path=str(tmp_path / "conversations.png"), full_page=True)
