"""A person runs a blind battle in the Compare tab (Debian chromium through Playwright): the page never shows
the contenders' names before the vote; voting reveals them and the leaderboard counts the battle."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def wait_for(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_blind_battle_vote_reveal_and_leaderboard(server, browser, lora_adapters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Compare A/B").click()
    page.locator("#compare-temperature input[type=number]").fill("0")
    page.locator("#compare-temperature input[type=number]").press("Enter")
    page.locator("#compare-max-tokens input[type=number]").fill("8")
    page.locator("#compare-max-tokens input[type=number]").press("Enter")
    page.fill("#compare-tags textarea", "browser")
    page.get_by_role("tab", name="Blind battle").click()

    # the pool: the bundled model and the bundled model with an adapter (typed: custom values are allowed)
    pool = page.locator("#compare-blind-pool input")
    pool.fill(f"{BUNDLED} + lora-a")
    pool.press("Enter")
    page.fill("#compare-blind-prompt textarea", "Name a colour.")
    page.click("#compare-blind-start")
    wait_for(lambda: "Vote for the better reply" in page.inner_text("#compare-reveal"))
    replies = page.inner_text("#compare-blind-a") + page.inner_text("#compare-blind-b")
    assert "Model A" in replies and "Model B" in replies
    # nothing outside the pool picker names a contender before the vote
    shown = page.inner_text("#compare-blind-a") + page.inner_text("#compare-blind-b")
    shown += page.inner_text("#compare-blind-stats-a") + page.inner_text("#compare-blind-stats-b")
    shown += page.inner_text("#compare-reveal")
    assert "lora-a" not in shown and "default" not in shown and "SmolLM2" not in shown
    page.screenshot(path=str(tmp_path / "blind-before-vote.png"), full_page=True)

    page.locator("#compare-vote").get_by_text("B is better").click()
    page.fill("#compare-vote-note textarea", "more specific")
    page.click("#compare-vote-submit")
    wait_for(lambda: "Model A was" in page.inner_text("#compare-reveal"))
    reveal = page.inner_text("#compare-reveal")
    assert "lora-a" in reveal and "your vote: B is better" in reveal

    page.get_by_role("tab", name="Leaderboard").click()
    board = page.locator("#compare-leaderboard")
    wait_for(lambda: "lora-a" in board.inner_text())
    wait_for(lambda: "voted battle" in page.inner_text("#compare-board-summary"))
    page.locator("#compare-board-tag input").click()
    page.get_by_role("option", name="browser").click()
    wait_for(lambda: "tag browser" in page.inner_text("#compare-board-summary"))
    assert "1 voted battle" in page.inner_text("#compare-board-summary")
    page.wait_for_selector("#compare-heatmap .js-plotly-plot", timeout=30_000)
    page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
