"""A person toggles the Playground's safety filter and sees the reply masked, then untoggles it and sees the
word again. The studio's policy here masks the word 'Paris' in replies (a word-list rule)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def ask(page, question: str) -> str:  # type: ignore[no-untyped-def]
    """Send one message and return its reply once the statistics say it finished."""
    bots = page.locator('#playground-chat [data-testid="bot"]')
    count = bots.count()
    page.fill("#playground-input textarea", question)
    page.click("#playground-send")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if bots.count() > count and "finish:" in page.inner_text("#playground-stats"):
            break
        time.sleep(0.2)
    time.sleep(1.0)  # the last update of the chat lands with the statistics
    return str(bots.last.inner_text().strip())


def test_toggle_the_safety_filter_and_see_a_masked_reply(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = Path(server.home) / "safety"
    studio_policy = folder / "policy.yaml"
    before = studio_policy.read_text(encoding="utf-8") if studio_policy.is_file() else None
    folder.mkdir(parents=True, exist_ok=True)
    words = folder / "browser-test-words.txt"  # word lists live in STUDIO_HOME/safety (issue 14)
    words.write_text("paris\n", encoding="utf-8")
    policy = {
        "name": "browser-test",
        "pii": {"enabled": False},
        "toxicity": {"enabled": False},
        "word_list": {"enabled": True, "file": str(words), "action": "mask", "apply_to": ["output"]},
    }
    folder.mkdir(parents=True, exist_ok=True)
    studio_policy.write_text(yaml.safe_dump(policy), encoding="utf-8")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})

        def open_playground() -> None:
            page.goto(server.url + "/")
            page.wait_for_selector("#playground-input textarea", timeout=90_000)
            for name, value in (("temperature", "0"), ("max_tokens", "16")):
                page.locator(f"#playground-{name} input[type=number]").fill(value)
                page.locator(f"#playground-{name} input[type=number]").press("Enter")

        open_playground()
        page.locator("#playground-safety input[type=checkbox]").check()
        masked = ask(page, "What is the capital of France?")
        assert "Paris" not in masked and "*****" in masked, masked
        assert "offensive_word mask in the reply" in page.inner_text("#playground-stats")  # shown with the message

        # a fresh page (a fresh conversation: the model would copy the masked answer from the history)
        open_playground()
        assert not page.locator("#playground-safety input[type=checkbox]").is_checked()  # off by default
        plain = ask(page, "What is the capital of France?")
        assert "Paris" in plain
        assert "Safety:" not in page.inner_text("#playground-stats")
    finally:
        words.unlink(missing_ok=True)
        if before is None:
            studio_policy.unlink()
        else:
            studio_policy.write_text(before, encoding="utf-8")
