"""A person fine-tunes in the browser: Dashboard → Start Training Job → the wizard (dataset, method, 2 steps)
→ Review → Submit → the monitor shows the job's progress and its loss curve (Debian chromium via Playwright); then
takes the trained adapter out of the studio: export GGUF → deploy → chat with the deployment (issue 17)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tests.browser.test_models_deploy_browser import export_deploy_and_chat

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def set_number(page, elem_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(f"#{elem_id} input").first
    box.fill(value)
    box.press("Tab")


def test_walk_the_wizard_and_watch_the_loss_curve(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.locator("#studio-tabs").get_by_role("tab", name="Fine-Tune").click()

    # the dashboard explains supervised fine-tuning and counts what is stored
    page.wait_for_selector("#finetune-hero", state="visible")
    assert "What is Supervised Fine-Tuning?" in page.inner_text("#finetune-hero")
    assert "Training Datasets" in page.inner_text("#finetune-dashboard-stats")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    page.click("#finetune-action-start")

    # Step 1: the built-in dataset is offered; no validation split for a 2-step run
    page.wait_for_selector("#finetune-step-1", state="visible")
    wait_for(lambda: page.locator("#finetune-dataset input").input_value() == "whetstone-assistant")
    set_number(page, "finetune-validation_split", "0")
    page.fill("#finetune-name textarea", "browser-lora")
    page.click("#finetune-next-1")

    # Step 2: five methods with badges; pick LoRA
    page.wait_for_selector("#finetune-method-cards", state="visible")
    cards = page.inner_text("#finetune-method-cards")
    for label in ("LoRA", "QLoRA", "Prefix Tuning", "Adapter Layers", "Full Fine-Tuning", "Most Efficient"):
        assert label in cards
    page.locator("#finetune-method label").filter(has_text="Prefix Tuning").click()
    wait_for(lambda: page.locator("#finetune-num_virtual_tokens").is_visible())  # method parameters follow
    page.locator("#finetune-method label").filter(has_text="LoRA — Most Efficient").click()
    wait_for(lambda: page.locator("#finetune-lora_r").is_visible())
    page.click("#finetune-next-2")

    # Step 3: a tiny run
    page.wait_for_selector("#finetune-max_steps", state="visible")
    set_number(page, "finetune-max_steps", "2")
    set_number(page, "finetune-batch_size", "2")
    set_number(page, "finetune-max_length", "128")
    page.click("#finetune-next-3")
    page.wait_for_selector("#finetune-not_before", state="visible")
    page.click("#finetune-review")

    # Review: the YAML is what will be submitted
    page.wait_for_selector("#finetune-yaml", state="visible")
    wait_for(lambda: "max_steps: 2" in page.inner_text("#finetune-yaml"))
    yaml_text = page.inner_text("#finetune-yaml")
    assert "method: lora" in yaml_text and "dataset: whetstone-assistant" in yaml_text
    assert "name: browser-lora" in yaml_text and "validation_split: 0.0" in yaml_text
    page.click("#finetune-submit")

    # the monitor opens on the new job and draws its loss curve from the database
    page.wait_for_selector("#finetune-job-header", state="visible", timeout=30_000)
    wait_for(lambda: "browser-lora" in page.inner_text("#finetune-job-header"), timeout=30)
    job_id = page.locator("#finetune-job-id textarea").input_value()
    assert job_id
    wait_for(lambda: page.locator("#finetune-loss-plot .js-plotly-plot .scatterlayer .trace").count() > 0, timeout=240)
    assert "train loss" in page.inner_text("#finetune-loss-plot")
    wait_for(lambda: "succeeded" in page.inner_text("#finetune-job-header"), timeout=240)
    wait_for(lambda: "registered as" in page.inner_text("#finetune-job-artifact"), timeout=30)
    assert "100%" in page.inner_text("#finetune-job-header")
    assert "step 2/2" in page.inner_text("#finetune-job-header")
    page.screenshot(path=str(tmp_path / "monitor.png"), full_page=True)

    # a reload shows the same job, read from the database
    page.reload()
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    page.locator("#studio-tabs").get_by_role("tab", name="Fine-Tune").click()
    page.locator("#finetune-tabs").get_by_role("tab", name="Jobs & monitor").click()
    wait_for(lambda: page.locator("#finetune-job-id textarea").input_value() == job_id, timeout=30)
    wait_for(lambda: "succeeded" in page.inner_text("#finetune-job-header"), timeout=30)
    wait_for(lambda: page.locator("#finetune-loss-plot .js-plotly-plot .scatterlayer .trace").count() > 0, timeout=30)
    assert job_id in page.inner_text("#finetune-jobs-table")

    # out of the studio: the adapter just trained, exported as GGUF, deployed, chatted with from the Playground
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make setup): no GGUF export or llama.cpp deployment")
    export_deploy_and_chat(page, server.home, adapter="browser-lora")
