"""Stop and Cancel are offered only while there is something to stop, and look like the secondary actions they
are, not like the main one (issue 15, point 10): the Playground's chat, Prompt and Batch views, an evaluation run,
a training job."""

from __future__ import annotations

import contextlib
import re

import pytest
import yaml
from playwright.sync_api import Locator, Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def open_page(server, browser) -> Page:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url + "/")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    return page


def css_class(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){name}(\s|$)")


def quiet(button: Locator) -> None:
    """Disabled, and styled as a secondary button (the red 'stop' style was as loud as Send)."""
    expect(button).to_be_disabled(timeout=30_000)
    expect(button).to_have_class(css_class("secondary"))
    expect(button).not_to_have_class(css_class("stop"))


def test_playground_stop_buttons_are_enabled_only_while_generating(server, browser) -> None:  # type: ignore[no-untyped-def]
    page = open_page(server, browser)
    stop = page.locator("#playground-stop")
    quiet(stop)
    for name, value in (("max_tokens", "400"), ("temperature", "0.8")):
        page.locator(f"#playground-{name} input[type=number]").fill(value)
        page.locator(f"#playground-{name} input[type=number]").press("Enter")
    page.fill("#playground-input textarea", "Write a long story about a lighthouse keeper.")
    page.click("#playground-send")
    expect(stop).to_be_enabled(timeout=30_000)
    expect(page.locator("#playground-stats")).to_contain_text("Generating", timeout=60_000)
    stop.click()
    expect(page.locator("#playground-stats")).to_contain_text("finish:", timeout=60_000)
    quiet(stop)

    # the Prompt view's Stop
    page.get_by_role("tab", name="Prompt", exact=True).click()
    prompt_stop = page.locator("#playground-prompt-stop")
    quiet(prompt_stop)
    page.fill("#playground-prompt textarea", "Write a long poem about the sea.")
    page.click("#playground-prompt-generate")
    expect(prompt_stop).to_be_enabled(timeout=30_000)
    prompt_stop.click()
    expect(page.locator("#playground-prompt-stats")).to_contain_text("finish:", timeout=60_000)
    quiet(prompt_stop)

    # the Batch view's Stop
    page.get_by_role("tab", name="Batch", exact=True).click()
    batch_stop = page.locator("#playground-batch-stop")
    quiet(batch_stop)
    page.fill("#playground-batch-prompts textarea", "Write a long story.\nWrite another long story.")
    page.click("#playground-batch-run")
    expect(batch_stop).to_be_enabled(timeout=30_000)
    batch_stop.click()
    expect(page.locator("#playground-batch-table tbody tr")).to_have_count(1, timeout=120_000)
    quiet(batch_stop)


def test_cancel_is_enabled_only_for_a_run_or_job_that_is_still_going(server, browser) -> None:  # type: ignore[no-untyped-def]
    from gradio_client import Client

    client = Client(server.url, verbose=False)
    # a training job that cannot start before the evaluation has been cancelled: it waits for its start time
    job = {
        "name": "cancel-button",
        "dataset": "whetstone-assistant",
        "base_model": BUNDLED,
        "method": "lora",
        "validation_split": 0.0,
        "max_steps": 1,
        "batch_size": 2,
        "max_length": 96,
        "not_before": "2999-01-01T00:00:00Z",
    }
    train_id, _ = client.predict(yaml.safe_dump(job, sort_keys=False), api_name="/finetune_submit")
    run = {
        "models": [BUNDLED],
        "dataset_file": "configs/eval/data/quick-qa.jsonl",
        "dataset": "eval-quick-qa",
        "metrics": ["exact_match"],
        "generation": {"temperature": 0.0, "max_tokens": 64},
        "limit": 12,
    }
    run_id, _ = client.predict(yaml.safe_dump(run), api_name="/evaluate_run_yaml")
    try:
        page = open_page(server, browser)
        page.get_by_role("tab", name="Evaluate", exact=True).click()
        expect(page.locator("#evaluate-job-id textarea")).to_have_value(run_id, timeout=30_000)
        cancel = page.locator("#evaluate-cancel")
        expect(cancel).to_be_enabled(timeout=30_000)
        expect(cancel).not_to_have_class(css_class("stop"))
        cancel.click()
        expect(page.locator("#evaluate-status")).to_contain_text("cancel", timeout=30_000)
        quiet(cancel)

        page.locator("#studio-tabs").get_by_role("tab", name="Fine-Tune").click()
        page.locator("#finetune-tabs").get_by_role("tab", name="Jobs & monitor").click()
        page.fill("#finetune-job-id textarea", train_id)
        page.locator("#finetune-job-id textarea").press("Enter")
        job_cancel = page.locator("#finetune-job-cancel")
        expect(job_cancel).to_be_enabled(timeout=30_000)  # queued: it can be cancelled
        expect(job_cancel).not_to_have_class(css_class("stop"))
        job_cancel.click()
        expect(page.locator("#finetune-job-header")).to_contain_text("cancelled", timeout=30_000)
        quiet(job_cancel)
    finally:
        for cancel_id, api in ((run_id, "/evaluate_cancel"), (train_id, "/finetune_cancel")):
            with contextlib.suppress(Exception):  # already ended
                client.predict(cancel_id, api_name=api)
