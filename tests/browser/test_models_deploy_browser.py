"""A person's view of issue 17: send an adapter to Compare's Batch A/B against its base; and (called at the end of the
finetune browser test, on the adapter it trained) export the bundled model with that adapter as a q8_0 GGUF (a
background job, checked against its source), deploy the export as its own llama.cpp server, click "Use in
Playground" and chat with the deployment there. ``STUDIO_SCREENSHOTS=docs/screenshots`` saves the Models tab as
``models.png``."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = Path(os.environ["STUDIO_SCREENSHOTS"]) if os.environ.get("STUDIO_SCREENSHOTS") else None
NAME = "browser-q8"


def _clean(home: Path) -> None:
    """Stop and forget the deployment, remove the export and its model link (the session's home is shared)."""
    from studio.db.engine import Database
    from studio.deploy.service import delete_deployment, list_deployments, stop_deployment
    from studio.settings import Settings

    settings = Settings(home=home, hf_cache=home / "hf-cache")
    db = Database(settings.db_url)
    for d in list_deployments(db, settings, refresh=False):
        if d.name == NAME:
            stop_deployment(db, settings, d.id)
            delete_deployment(db, settings, d.id)
    for link in (home / "models").glob(f"{NAME}.*.gguf"):
        link.unlink()
    shutil.rmtree(home / "exports" / NAME, ignore_errors=True)


def _toasts(page) -> str:  # type: ignore[no-untyped-def]
    return " | ".join(page.locator("[data-testid='toast-body']").all_inner_texts())


def test_an_adapter_goes_to_compare_batch_ab_against_its_base(server, browser, lora_adapters) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.locator("#studio-tabs").get_by_role("tab", name="Models", exact=True).click()
    page.click("#adapters-refresh")
    expect(page.locator("#adapters-table")).to_contain_text("lora-a", timeout=30_000)
    page.fill("#adapters-selected input", "lora-a")
    page.keyboard.press("Enter")
    page.click("#adapters-batch-ab")
    expect(page.locator("#compare-batch-b input")).to_have_value(
        "HuggingFaceTB/SmolLM2-135M-Instruct + lora-a", timeout=30_000
    )
    expect(page.locator("#compare-batch-a input")).to_have_value("HuggingFaceTB/SmolLM2-135M-Instruct")
    expect(page.locator("#compare-batch-prompts textarea")).to_have_value(re.compile("capital of France"))
    expect(page.locator("#compare-batch-run")).to_be_visible()  # the Compare tab, on its Batch A/B panel


def export_deploy_and_chat(page, home: Path, adapter: str) -> None:  # type: ignore[no-untyped-def]
    """From any tab: export the bundled model with ``adapter`` (an adapter trained in the Fine-Tune tab a moment ago)
    as a q8_0 GGUF, deploy the export on llama.cpp, "Use in Playground" and chat with it. The finetune browser test
    ends with this, so the whole flow runs: train → export GGUF → deploy → chat."""
    page.locator("#studio-tabs").get_by_role("tab", name="Models", exact=True).click()
    try:
        page.click("#export-quant input")
        page.get_by_role("option", name="q8_0", exact=True).click()
        page.click("#export-adapter input")  # the picker is refreshed on focus: the new adapter is offered
        page.get_by_role("option", name=adapter, exact=True).click(timeout=30_000)
        page.fill("#export-name textarea", NAME)
        page.click("#export-start")
        jobs = page.locator("#export-jobs")
        expect(jobs).to_contain_text(NAME, timeout=30_000)
        expect(jobs).to_contain_text("succeeded", timeout=400_000)  # the timer follows the job's row
        exports = page.locator("#export-list")
        expect(exports).to_contain_text(NAME, timeout=30_000)
        expect(exports).to_contain_text("prompts identical")  # how the quantized GGUF answered against its source
        expect(exports).to_contain_text(adapter)  # the export's source names the adapter

        page.fill("#deploy-target input", f"export:{NAME}")
        page.keyboard.press("Enter")
        page.fill("#deploy-name textarea", NAME)
        page.click("#deploy-start")
        try:
            expect(page.locator("#deploy-status")).to_contain_text("is starting", timeout=30_000)
        except AssertionError:
            raise AssertionError(f"the deployment did not start: {_toasts(page)}") from None
        table = page.locator("#deploy-table")
        expect(table).to_contain_text(NAME, timeout=30_000)
        expect(table).to_contain_text("healthy", timeout=180_000)  # a real /health answer, read by the timer
        expect(table).to_contain_text("llamacpp")
        if SCREENSHOTS is not None:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.locator("#export-title").scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / "models.png"), full_page=True)

        page.fill("#deploy-selected input", NAME)  # (a click on its row picks it too, but the timer redraws the table)
        page.keyboard.press("Enter")
        page.click("#deploy-use")
        expect(page.locator("#playground-model input")).to_have_value(f"deploy:{NAME}", timeout=30_000)
        page.fill("#playground-input textarea", "What is the capital of France?")
        page.click("#playground-send")
        expect(page.locator("#playground-stats")).to_contain_text("finish:", timeout=120_000)
        expect(page.locator('#playground-chat [data-testid="bot"]').last).not_to_be_empty()
    finally:
        _clean(home)
