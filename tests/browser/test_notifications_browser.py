"""A job that ends while the person looks at another tab (issue 20, point 5): a toast on that tab and the bell's
unread count, without a reload. The job is ended through the queue API by this test (a worker would do the same
call), in the server's own database, on a device slot no worker of the server serves."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from studio.db import Database
from studio.jobs import queue
from studio.jobs.queue import Lease
from studio.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SLOT = "browser-test-slot"


def test_a_job_ending_shows_a_toast_and_the_bell_count_on_another_tab(server, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Aliases").click()
    expect(page.locator("#aliases-table")).to_be_visible(timeout=30_000)
    bell = page.locator("#notifications-bell")
    before = bell.inner_text()
    seen = int(m.group(1)) if (m := re.search(r"\((\d+)\)", before)) else 0
    time.sleep(4)  # the page's first poll has run: only what happens from now on toasts

    settings = Settings(home=server.home, hf_cache=server.home / "hf-cache")
    db = Database(settings.db_url)
    try:
        job = queue.submit(db, "selftest", {"steps": 1}, name="toast-me", device=SLOT)
        claimed = queue.claim_next(db, "browser-test:1", device=SLOT)
        assert claimed is not None and claimed.id == job.id
        assert queue.finish(db, Lease.of(claimed), "succeeded", message="done")
    finally:
        db.dispose()

    toast = page.locator("[data-testid='toast-body']", has_text="toast-me")
    expect(toast.first).to_be_visible(timeout=20_000)
    expect(bell).to_contain_text(f"({seen + 1})", timeout=20_000)
    assert page.locator("#aliases-table").is_visible()  # still on the Aliases tab
