"""A person's view of issue 16's first two points: in the Models tab, list a repo of the (loopback) Hugging Face Hub,
download it, see it appear among the models, and load it in the Playground, where it answers token by token (a
tiny random model: the words are garbage, the tokens are real)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = "org/tiny-chat"
SCREENSHOTS = Path(os.environ["STUDIO_SCREENSHOTS"]) if os.environ.get("STUDIO_SCREENSHOTS") else None


def test_download_from_the_hub_then_chat_with_it_in_the_playground(hub_studio, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _hub = hub_studio
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.locator("#studio-tabs").get_by_role("tab", name="Models", exact=True).click()
    expect(page.locator("#models-table")).to_contain_text("HuggingFaceTB/SmolLM2-135M-Instruct", timeout=30_000)

    page.fill("#models-repo textarea", REPO)
    page.click("#models-list-files")
    expect(page.locator("#models-files-summary")).to_contain_text("The download takes", timeout=30_000)
    expect(page.locator("#models-files")).to_contain_text("model.safetensors")

    page.click("#models-pull")
    downloads = page.locator("#models-downloads")
    expect(downloads).to_contain_text(REPO, timeout=30_000)
    expect(downloads).to_contain_text("succeeded", timeout=120_000)  # the timer follows the job's row
    table = page.locator("#models-table")
    expect(table).to_contain_text(REPO, timeout=30_000)  # read again when the download finished
    expect(table).to_contain_text("apache-2.0")
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "models-tab.png"), full_page=True)

    table.get_by_text(REPO, exact=True).first.click()
    expect(page.locator("#models-selected input")).to_have_value(REPO, timeout=10_000)
    page.click("#models-use")
    expect(page.locator("#playground-model input")).to_have_value(REPO, timeout=30_000)

    page.click("#playground-load")
    expect(page.locator("#playground-load-status")).to_contain_text("loaded", timeout=120_000)
    expect(page.locator("#playground-load-status")).to_contain_text(REPO)
    page.fill("#playground-input textarea", "Hello, who are you?")
    page.click("#playground-send")
    stats = page.locator("#playground-stats")
    expect(stats).to_contain_text("finish:", timeout=120_000)
    completion = re.search(r"completion (\d+) tok", stats.inner_text())
    assert completion is not None and int(completion.group(1)) > 0, stats.inner_text()
    expect(page.locator('#playground-chat [data-testid="bot"]').last).not_to_be_empty()
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
