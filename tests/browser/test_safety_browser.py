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


def test_audit_picker_names_the_state_the_audit_finished_in(server, browser) -> None:  # type: ignore[no-untyped-def]
    """Issue 15, point 5: the picker kept the label it got at submit time ("... · queued") after the audit had
    finished; it must follow the job's state like the status line does."""
    import re

    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Safety").click()
    page.get_by_role("tab", name="Audits", exact=True).click()
    expect(page.locator("#safety-audit-start")).to_be_visible(timeout=30_000)

    for template in ("job-story", "neighbour", "joke", "trust", "complete"):  # the smallest audit: 2 generations
        page.locator("#safety-audit-templates label", has_text=template).click()
    page.fill("#safety-audit-groups textarea", "gender: man, woman")
    page.fill("#safety-audit-samples input", "1")
    page.fill("#safety-audit-max-tokens input", "8")
    page.fill("#safety-audit-name textarea", "picker state")
    page.click("#safety-audit-start")

    picker = page.locator("#safety-audit-job input")
    expect(picker).to_have_value(re.compile(r"picker state .* · (queued|running)$"), timeout=30_000)
    expect(page.locator("#safety-audit-status")).to_contain_text("succeeded", timeout=300_000)
    expect(picker).to_have_value(re.compile(r"picker state .* · succeeded$"), timeout=10_000)
