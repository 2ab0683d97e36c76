"""Fine-Tune → Curate through `gradio_client` against the launched studio: preview a pipeline on a noisy
dataset (what each step changed or dropped, and why), run it into a new dataset (new version with lineage),
save and load a pipeline, refusals that name the field, and an augmentation job with the bundled model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from gradio_client import Client, handle_file

pytestmark = pytest.mark.slow

FILLER = "which is a fact that many students learn early in school and remember for the rest of their lives"
ROWS = [
    ("What is the capital of France?", f"Paris is the capital of France, {FILLER}."),
    ("What is the largest planet?", "Jupiter is the largest planet in the solar system."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("What colour is the sky on a clear day?", "The sky looks blue because air scatters blue light most."),
    ("What is the capital of France?", f"Paris is the capital of France, {FILLER}!"),  # near-duplicate of row 1
    ("<p>How do <b>plants</b> make food?</p>", "They use photosynthesis.<br>"),  # markup
    ("What does cafÃ© mean?", "A cafÃ© is a small coffee shop."),  # mojibake
    ("Tell me a joke about cats.", "As an AI language model, I cannot tell jokes."),  # refusal
    ("भारत की राजधानी क्या है?", "भारत की राजधानी नई दिल्ली है।"),  # Hindi
]

PIPELINE = {
    "name": "client-tidy",
    "steps": [
        {"step": "clean"},
        {"step": "empty"},
        {"step": "refusal"},
        {"step": "dedupe", "threshold": 0.7},
    ],
}


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def noisy(client: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("curate") / "noisy.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for q, a in ROWS:
            row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    status, *_ = client.predict(
        handle_file(str(path)), "client-noisy", "", "", "reject", "", 0, api_name="/finetune_upload"
    )
    assert "Imported" in status
    return "client-noisy"


def _text(pipeline: dict[str, Any]) -> str:
    return yaml.safe_dump(pipeline, sort_keys=False)


def test_preview_says_what_each_step_changed_and_dropped(client: Client, noisy: str) -> None:
    summary, _funnel, steps, examples, _clusters, report = client.predict(
        noisy, "latest", _text(PIPELINE), 50, api_name="/finetune_curate_preview"
    )
    by_step = {row[0]: row for row in steps["data"]}
    assert by_step["clean"][1:5] == [11, 11, 2, 0]  # rows in, out, changed (markup, mojibake), dropped
    assert by_step["refusal"][4] == 1 and by_step["dedupe"][4] == 1
    assert report["kept"] == 9 and report["rows_in"] == 11
    texts = json.dumps(examples["data"], ensure_ascii=False)
    assert "café" in texts and "As an AI language model" in texts  # the mended row, the dropped refusal
    dedupe = next(s for s in report["steps"] if s["step"] == "dedupe")
    assert dedupe["clusters"] == [[0, 6]]  # rows 1 and 7 (indices among the 10 rows that reached it)
    assert "Preview" in summary
    assert "client-noisy-tidy" not in json.dumps(client.predict(api_name="/finetune_datasets")[1])  # nothing written


def test_run_makes_a_new_dataset_with_lineage(client: Client, noisy: str) -> None:
    out = client.predict(noisy, "latest", _text(PIPELINE), "client-noisy-tidy", api_name="/finetune_curate_run")
    summary, lineage = out[0], out[7]
    assert "client-noisy-tidy" in summary and "9 rows" in summary
    labels = {n["id"]: n["label"] for n in lineage["nodes"]}
    edges = {(labels[e["parent"]], labels[e["child"]], e["label"]) for e in lineage["edges"]}
    assert ("client-noisy v1", "client-noisy-tidy v1", "curate: clean, empty, refusal, dedupe") in edges
    _fig, again = client.predict(noisy, api_name="/finetune_lineage")  # from the source, the same edge
    assert {n["label"] for n in again["nodes"]} >= {"client-noisy v1", "client-noisy-tidy v1"}


def test_save_and_load_a_pipeline(client: Client) -> None:
    picker, _filters = client.predict(_text(PIPELINE), api_name="/finetune_curate_save")
    assert picker["value"] == "client-tidy" and ["client-tidy", "client-tidy"] in picker["choices"]
    text = client.predict("client-tidy", api_name="/finetune_curate_pipeline")
    dedupe = yaml.safe_load(text)["steps"][3]
    assert (dedupe["step"], dedupe["threshold"]) == ("dedupe", 0.7)


def test_bad_pipelines_are_refused_by_field(client: Client, noisy: str) -> None:
    bad = {"name": "bad", "steps": [{"step": "dedupe", "threshold": 1.5}]}
    with pytest.raises(Exception, match=r"steps\[0\]\.threshold"):
        client.predict(noisy, "latest", _text(bad), 20, api_name="/finetune_curate_preview")
    everything = {"name": "all-gone", "steps": [{"step": "length", "min_chars": 100000}]}
    with pytest.raises(Exception, match="would drop every one of the 11 rows"):
        client.predict(noisy, "latest", _text(everything), "client-gone", api_name="/finetune_curate_run")
    assert "client-gone" not in json.dumps(client.predict(api_name="/finetune_datasets")[1])


def _augment_args(noisy: str, **over: Any) -> list[Any]:
    values: dict[str, Any] = {
        "model": "default", "mode": "paraphrase", "fields": "prompts", "variants": 1, "max_rows": 1, "seeds": 3,
        "count": 10, "temperature": 0.7, "top_p": 0.95, "max_tokens": 16, "seed": 0, "into": "client-noisy-more",
        "include_source": True, "filter": "(none)",
    }  # fmt: skip
    values.update(over)
    return [noisy, "latest", *values.values()]


def test_augmentation_job_writes_rows_with_provenance(client: Client, noisy: str) -> None:
    with pytest.raises(Exception, match="variants"):
        client.predict(*_augment_args(noisy, variants=0), api_name="/finetune_augment")
    message, job_id = client.predict(*_augment_args(noisy), api_name="/finetune_augment")
    assert job_id and job_id in message
    deadline = time.monotonic() + 240
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = client.predict(job_id, api_name="/finetune_job")
        if data["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            break
        time.sleep(2)
    assert data["state"] == "succeeded", f"job ended {data.get('state')}: {data.get('message')}"
    _html, cards = client.predict(api_name="/finetune_datasets")
    card = next(c for c in cards if c["name"] == "client-noisy-more")
    assert card["num_examples"] == len(ROWS) + 1  # the source rows and one paraphrase
    _fig, lineage = client.predict("client-noisy-more", api_name="/finetune_lineage")
    assert any(e["label"].startswith("augment paraphrase") for e in lineage["edges"])


def test_unknown_dataset_is_named(client: Client, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="nope"):
        client.predict("nope", "latest", _text(PIPELINE), 10, api_name="/finetune_curate_preview")
