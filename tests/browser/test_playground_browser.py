"""A person's view: Debian chromium (driven by Playwright) opens the studio and chats in the Playground."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TABS = ["Aliases", "Models", "Playground", "Compare A/B", "Fine-Tune", "Evaluate", "Safety"]


def test_chat_in_the_playground_streams_and_shows_stats(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)

    top_level = page.locator("#studio-tabs").get_by_role("tab").all()[: len(TABS)]  # then the Playground's views
    assert [t.inner_text().strip() for t in top_level] == TABS
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in page.locator("#playground-model input").input_value()

    page.locator("#playground-temperature input[type=number]").fill("0")
    page.locator("#playground-temperature input[type=number]").press("Enter")
    # a long greedy reply ("Bonjour, I'm delighted to share ... Paris ..."): a 7-token answer can arrive in
    # one browser update on a quiet machine, which says nothing about streaming
    page.fill("#playground-input textarea", "Tell me about Paris, the capital of France.")
    page.click("#playground-send")

    bot = page.locator('#playground-chat [data-testid="bot"]')
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if bot.count():
            text = bot.last.inner_text().strip()
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        if "finish:" in page.inner_text("#playground-stats"):
            break
        time.sleep(0.05)
    stats = page.inner_text("#playground-stats")
    # typed the moment the stats say "finish": the last updates of the reply must not wipe it
    page.fill("#playground-input textarea", "typed right away")
    time.sleep(2)
    assert page.locator("#playground-input textarea").input_value() == "typed right away"
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

    final = bot.last.inner_text().strip()
    assert "Paris" in final
    assert len(seen) >= 2, f"the reply appeared in one piece, not streamed: {seen}"
    assert all(final.startswith(s) for s in seen)  # every partial view was a prefix of the final reply
    for label in ("prompt", "completion", "TTFT", "tok/s"):
        assert label in stats
    assert (tmp_path / "playground.png").stat().st_size > 10_000
