"""A person pastes a sentence with an e-mail address into Safety → Scan and sees it highlighted and masked
(Debian chromium through Playwright)."""

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


def test_scan_masks_an_email_address(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Safety").click()

    page.fill("#safety-scan-text textarea", "Write to jane.doe@example.com before Friday.")
    page.click("#safety-scan-btn")
    anonymized = page.locator("#safety-scan-anonymized textarea")
    wait_for(lambda: anonymized.input_value() != "")
    assert anonymized.input_value() == "Write to <EMAIL_ADDRESS> before Friday."
    highlight = page.locator("#safety-scan-highlight")
    wait_for(lambda: "EMAIL_ADDRESS" in highlight.inner_text())
    assert "jane.doe@example.com" in highlight.inner_text()  # the finding is shown in place, labelled
    assert "EMAIL_ADDRESS" in page.locator("#safety-scan-table").inner_text()
    page.screenshot(path=str(tmp_path / "safety-scan.png"), full_page=True)
