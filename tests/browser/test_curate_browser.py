"""A person curates a dataset in the browser: Fine-Tune → Curate, pick a noisy dataset and a pipeline, preview
it (the funnel and what each step dropped), run it into a new dataset, see the new version in the lineage graph,
then train on it from the wizard (Debian chromium via Playwright)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from gradio_client import Client, handle_file
from playwright.sync_api import expect

from tests.browser.test_finetune_browser import set_number
from tests.browser.test_stale_state_browser import open_page, pick

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROWS = [
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("How many days are in a week?", "A week has seven days."),
    ("<div>What is ice?</div>", "Ice is <i>frozen</i> water."),
    ("Tell me a secret.", "As an AI language model, I cannot share secrets."),
    ("How many days are in a week?", "A week has seven days!"),
    ("What do bees make?", "Bees make honey and wax."),
    ("Which ocean is the largest?", "The Pacific is the largest ocean."),
    ("What is the freezing point of water?", "Water freezes at zero degrees Celsius."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What gas do plants take in?", "Plants take in carbon dioxide."),
]
PIPELINE = {
    "name": "browser-tidy",
    "steps": [{"step": "clean"}, {"step": "refusal"}, {"step": "dedupe", "threshold": 0.6, "shingle_size": 2}],
}


def test_curate_preview_run_and_train_on_the_new_version(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "browser-noisy.jsonl"
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in ROWS
        )
    )
    Client(server.url, verbose=False).predict(
        handle_file(str(path)), "browser-noisy", "", "", "reject", "", 0, api_name="/finetune_upload"
    )

    page = open_page(server, browser)
    page.locator("#studio-tabs").get_by_role("tab", name="Fine-Tune").click()
    page.locator("#finetune-tabs").get_by_role("tab", name="Curate").click()
    pick(page, "curate-dataset", "browser-noisy")

    # the pipeline is YAML in a code box; the steps' help is one click away
    editor = page.locator("#curate-pipeline .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    set_number(page, "curate-sample", "50")

    page.click("#curate-preview-btn")
    expect(page.locator("#curate-summary")).to_contain_text("Preview", timeout=60_000)
    expect(page.locator("#curate-summary")).to_contain_text("kept 9 of 11 rows")
    expect(page.locator("#curate-funnel .js-plotly-plot")).to_have_count(1, timeout=30_000)
    expect(page.locator("#curate-examples")).to_contain_text("As an AI language model")  # why it was dropped
    page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)

    page.fill("#curate-into textarea", "browser-tidy")
    page.click("#curate-run-btn")
    expect(page.locator("#curate-summary")).to_contain_text("browser-tidy", timeout=60_000)
    expect(page.locator("#curate-summary")).to_contain_text("9 rows")
    lineage = page.locator("#curate-lineage")
    expect(lineage).to_contain_text("browser-tidy v1", timeout=30_000)
    expect(lineage).to_contain_text("browser-noisy v1")

    # train on the new version from the wizard
    page.locator("#finetune-tabs").get_by_role("tab", name="New job").click()
    pick(page, "finetune-dataset", "browser-tidy")
    set_number(page, "finetune-validation_split", "0")
    page.fill("#finetune-name textarea", "on-tidy")
    page.click("#finetune-next-1")
    page.wait_for_selector("#finetune-method-cards", state="visible")
    page.click("#finetune-next-2")
    page.wait_for_selector("#finetune-max_steps", state="visible")
    set_number(page, "finetune-max_steps", "1")
    set_number(page, "finetune-batch_size", "2")
    set_number(page, "finetune-max_length", "64")
    page.click("#finetune-next-3")
    page.wait_for_selector("#finetune-not_before", state="visible")
    page.click("#finetune-review")
    expect(page.locator("#finetune-yaml")).to_contain_text("dataset: browser-tidy", timeout=30_000)
    page.click("#finetune-submit")
    header = page.locator("#finetune-job-header")
    expect(header).to_contain_text("on-tidy", timeout=30_000)
    expect(header).to_contain_text("succeeded", timeout=240_000)

    # the lineage now ends in the training job
    page.locator("#finetune-tabs").get_by_role("tab", name="Curate").click()
    pick(page, "curate-dataset", "browser-tidy")
    expect(page.locator("#curate-lineage")).to_contain_text("finetune on-tidy", timeout=30_000)
