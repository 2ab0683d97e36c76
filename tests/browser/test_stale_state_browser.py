"""What the page shows follows what the studio holds, without a manual refresh (issue 15, point 5): a fresh page
says the default model is loaded and the Prompt view counts tokens with it; picking an alias in the Playground
clears the previous use case's label and system prompt; a new alias is offered in Compare's pickers at once; the
load status line names the adapter that Fine-Tune's "Load in Playground" made active."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def open_page(server, browser, width: int = 1400, height: int = 1100) -> Page:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server.url + "/")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    return page


def pick(page: Page, elem_id: str, option: str) -> None:
    """Choose ``option`` in a Gradio dropdown the way a person does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_a_fresh_page_says_the_default_model_is_loaded(server, browser) -> None:  # type: ignore[no-untyped-def]
    """`studio serve` loads the default model before it serves; a fresh page showed an empty status line."""
    assert BUNDLED in httpx.get(server.url + "/health", timeout=10).json()["loaded"]
    page = open_page(server, browser)
    status = page.locator("#playground-load-status")
    expect(status).to_contain_text("loaded", timeout=30_000)
    expect(status).to_contain_text(BUNDLED)


def test_the_prompt_view_counts_tokens_with_the_loaded_model(server, browser) -> None:  # type: ignore[no-untyped-def]
    """The Prompt view said "load the model to count tokens" while the model was loaded: the line was written when
    the page was built, before `studio serve` loaded the model."""
    assert BUNDLED in httpx.get(server.url + "/health", timeout=10).json()["loaded"]
    page = open_page(server, browser)
    page.get_by_role("tab", name="Prompt", exact=True).click()
    count = page.locator("#playground-prompt-count")
    expect(count).to_be_visible()
    expect(count).not_to_contain_text("load the model")
    expect(count).to_have_text(re.compile(r"0 characters · 0 tokens"))
    page.fill("#playground-prompt textarea", "What is the capital of France?")
    expect(count).to_have_text(re.compile(r"30 characters · \d+ tokens"), timeout=30_000)


def test_picking_an_alias_clears_the_previous_use_case(server, browser) -> None:  # type: ignore[no-untyped-def]
    """The use case had set its system prompt and labelled the conversation; picking an alias (which brings its own
    parameters) left both, so the alias ran with another task's system prompt and was saved under its label."""
    from studio.playground.prompts import use_case

    aliases_dir = server.home / "aliases"
    aliases_dir.mkdir(exist_ok=True)
    alias_file = aliases_dir / "pick--reset.yaml"
    alias_file.write_text(
        yaml.safe_dump({"alias": "pick:reset", "repo": BUNDLED, "request_params": {"temperature": 0.3}}),
        encoding="utf-8",
    )
    try:
        page = open_page(server, browser)
        system = page.locator("#playground-system textarea")
        label = page.locator("#playground-use-case input")
        pick(page, "playground-use-case", "Chatbot")
        expect(system).to_have_value(use_case("Chatbot").system_prompt)
        expect(label).to_have_value("Chatbot")

        pick(page, "playground-model", "pick:reset")  # a page loaded after the file was written offers it
        expect(page.locator("#playground-temperature input[type=number]")).to_have_value("0.3")  # its parameters
        expect(label).to_have_value("")
        expect(system).to_have_value("")  # the studio's default system prompt (configs/defaults.yaml)

        # a system prompt the person wrote is theirs: picking another model keeps it
        system.fill("Answer in French.")
        pick(page, "playground-use-case", "Chatbot")
        expect(system).to_have_value(use_case("Chatbot").system_prompt)
        system.fill("Answer in French.")
        pick(page, "playground-model", BUNDLED)
        expect(label).to_have_value("")
        expect(system).to_have_value("Answer in French.")
    finally:
        alias_file.unlink(missing_ok=True)


def test_a_new_alias_is_offered_in_compare_without_a_refresh(server, browser) -> None:  # type: ignore[no-untyped-def]
    """An alias saved in the Aliases tab reached the Playground's picker but not Compare's until "Refresh models &
    adapters" was pressed; and a page loaded after an alias file was written offered it nowhere in Compare."""
    aliases_dir = server.home / "aliases"
    page = open_page(server, browser)
    try:
        page.get_by_role("tab", name="Aliases", exact=True).click()
        page.fill("#aliases-name textarea", "compare:fresh")
        page.click("#aliases-save")
        expect(page.locator("#aliases-report")).to_contain_text("saved", timeout=30_000)

        page.get_by_role("tab", name="Compare A/B", exact=True).click()
        page.locator("#compare-contenders input").click()
        expect(page.get_by_role("option", name="compare:fresh", exact=True)).to_have_count(1, timeout=15_000)
        page.keyboard.press("Escape")

        # written by another client (the CLI, a file copied in): a page opened afterwards offers it
        (aliases_dir / "compare--file.yaml").write_text(
            yaml.safe_dump({"alias": "compare:file", "repo": BUNDLED}), encoding="utf-8"
        )
        page = open_page(server, browser)
        page.get_by_role("tab", name="Compare A/B", exact=True).click()
        page.get_by_role("tab", name="Batch A/B", exact=True).click()
        page.locator("#compare-batch-a input").click()
        expect(page.get_by_role("option", name="compare:file", exact=True)).to_have_count(1, timeout=15_000)
    finally:
        for name in ("compare--fresh.yaml", "compare--file.yaml"):
            (aliases_dir / name).unlink(missing_ok=True)


TINY_JOB = {
    "name": "status-line-lora",
    "dataset": "whetstone-assistant",
    "base_model": BUNDLED,
    "method": "lora",
    "validation_split": 0.0,
    "max_steps": 1,
    "batch_size": 2,
    "max_length": 96,
    "eval_every_steps": None,
    "early_stopping_patience": 0,
    "checkpoint_every_steps": 1,
    "logging_steps": 1,
}


def test_load_in_playground_status_names_the_trained_adapter(server, browser) -> None:  # type: ignore[no-untyped-def]
    """Fine-Tune's "Load in Playground" loads the base model with the trained adapter active and opens the
    Playground, whose status line still described the plain model (or nothing)."""
    from gradio_client import Client

    client = Client(server.url, verbose=False)
    job_id, _message = client.predict(yaml.safe_dump(TINY_JOB, sort_keys=False), api_name="/finetune_submit")
    deadline = time.monotonic() + 300
    data: dict = {}
    while time.monotonic() < deadline:
        data = client.predict(job_id, api_name="/finetune_job")
        if data["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            break
        time.sleep(2)
    assert data["state"] == "succeeded", data.get("message")
    adapter = data["registered_as"]

    page = open_page(server, browser)
    try:
        page.locator("#studio-tabs").get_by_role("tab", name="Fine-Tune").click()
        page.locator("#finetune-tabs").get_by_role("tab", name="Jobs & monitor").click()
        page.fill("#finetune-job-id textarea", job_id)
        page.click("#finetune-job-load")
        expect(page.locator("#playground-input textarea")).to_be_visible(timeout=30_000)  # the Playground opened
        expect(page.locator("#playground-adapter textarea")).to_have_value(adapter)
        status = page.locator("#playground-load-status")
        expect(status).to_contain_text(f"adapter {adapter} active", timeout=120_000)
        expect(status).to_contain_text(BUNDLED)
    finally:
        # the session's other tests expect the base model to answer
        client.predict(BUNDLED, api_name="/playground_disable_adapters")
