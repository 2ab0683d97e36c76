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


# Records, from the moment it is installed, every time the results chart shows axes without scores (the "No scores
# yet" figure, or a plot without a single trace) while it is on screen.
WATCH_EMPTY_CHART = """() => {
  window.__emptyChart = [];
  const empty = () => {
    const chart = document.querySelector('#evaluate-chart');
    if (!chart || chart.offsetParent === null) return null;
    const plot = chart.querySelector('.js-plotly-plot');
    const text = (chart.textContent || '').trim();
    return text.includes('No scores yet') || (plot && plot.querySelectorAll('.trace').length === 0) ? text : null;
  };
  // a plot being redrawn has no traces for a moment: only what is still empty half a second later counts
  const record = () => {
    const t = empty();
    if (t !== null && !window.__emptyChart.includes(t.slice(0, 80))) window.__emptyChart.push(t.slice(0, 80));
  };
  const check = () => { if (empty() !== null) setTimeout(record, 500); };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_run_with_the_defaults_finishes_with_scores_and_a_progress_bar(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 15, point 4: "Run" with the form as it comes fails when no dataset is preselected; the progress must
    be a progress bar (not a slider one can drag); no empty "No scores yet" axes while the run has no scores."""
    import os
    import re

    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#evaluate-run")).to_be_visible(timeout=30_000)
    expect(page.locator("#evaluate-dataset input")).to_have_value("whetstone-assistant")
    progress = page.locator("#evaluate-progress")
    expect(progress.locator("input")).to_have_count(0)  # nothing to drag or type into
    expect(progress.get_by_role("progressbar")).to_have_count(1)

    job_id = page.locator("#evaluate-job-id textarea, #evaluate-job-id input").first
    previous = job_id.input_value()
    page.evaluate(WATCH_EMPTY_CHART)
    page.click("#evaluate-run")
    expect(job_id).not_to_have_value(previous, timeout=30_000)  # the run was queued
    run_id = job_id.input_value()
    status = page.locator("#evaluate-status")
    expect(status).to_contain_text(re.compile(rf"{run_id}.*succeeded"), timeout=420_000)

    expect(progress.get_by_role("progressbar")).to_have_attribute("value", "100", timeout=10_000)
    expect(progress).to_contain_text("100")
    summary = page.locator("#evaluate-summary-table")
    for metric in ("perplexity", "rouge1", "exact_match"):
        expect(summary).to_contain_text(metric, timeout=30_000)
    chart = page.locator("#evaluate-chart")
    expect(chart.locator(".js-plotly-plot .trace.bars").first).to_be_visible(timeout=30_000)
    assert page.evaluate("window.__emptyChart") == []
    for folder in filter(None, [tmp_path, os.environ.get("STUDIO_SCREENSHOTS")]):
        page.locator("#evaluate-tab-run").screenshot(path=str(Path(folder) / "evaluate-defaults.png"))
