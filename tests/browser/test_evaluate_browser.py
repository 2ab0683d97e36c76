"""A person's view of the Evaluate tab: start a run from the form, watch it finish, see the results table and the
bar chart comparing the models."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_start_a_run_and_see_the_results_table_and_chart(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_selector("#evaluate-run", timeout=30_000)

    dataset = page.locator("#evaluate-dataset input")
    dataset.click()
    dataset.fill("whetstone-assistant")
    page.get_by_role("option", name="whetstone-assistant").click()
    limit = page.locator("#evaluate-limit input")
    limit.fill("2")
    limit.press("Tab")
    tokens = page.locator("#evaluate-max-tokens input[type=number]")
    tokens.fill("12")
    tokens.press("Enter")
    page.click("#evaluate-run")

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = page.inner_text("#evaluate-status")
        if "succeeded" in status or "failed" in status:
            break
        time.sleep(1)
    assert "succeeded" in page.inner_text("#evaluate-status"), page.inner_text("#evaluate-status")
    run_id = page.locator("#evaluate-job-id textarea, #evaluate-job-id input").first.input_value()
    assert len(run_id) == 32

    summary = page.locator("#evaluate-summary-table")
    summary.get_by_text("rouge1").first.wait_for(timeout=30_000)
    assert "exact_match" in summary.inner_text()
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in summary.inner_text()
    page.locator("#evaluate-chart .js-plotly-plot").first.wait_for(timeout=30_000)
    assert page.locator("#evaluate-chart .bars path").count() >= 2  # one bar per metric panel at least
    assert "What is" in page.inner_text("#evaluate-examples-table")  # the drill-down shows the inputs
    page.screenshot(path=str(tmp_path / "evaluate.png"), full_page=True)
    assert (tmp_path / "evaluate.png").stat().st_size > 10_000
