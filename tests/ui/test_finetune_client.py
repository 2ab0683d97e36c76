"""The Fine-Tune tab's public api_names through `gradio_client`, against the launched studio (with its job
worker): inspect and import a dataset, list datasets, submit a real 2-step LoRA job and poll it to success,
cancel and resume, errors that name the field."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gradio_client import Client, handle_file

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def write_csv(path: Path, broken_row: int | None = None, duplicate: bool = False) -> Path:
    """Question/answer pairs (a prompt/completion file with non-standard column names)."""
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} is {2 * i}."} for i in range(1, 13)]
    if broken_row is not None:
        rows[broken_row - 1]["answer"] = ""
    if duplicate:
        rows.append(dict(rows[0]))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def job_config(**overrides: Any) -> str:
    data: dict[str, Any] = {
        "name": "client-tiny-lora",
        "dataset": "whetstone-assistant",
        "base_model": BUNDLED,
        "method": "lora",
        "validation_split": 0.0,
        "max_steps": 2,
        "batch_size": 2,
        "max_length": 128,
        "eval_every_steps": None,
        "early_stopping_patience": 0,
        "checkpoint_every_steps": 1,
        "logging_steps": 1,
    }
    data.update(overrides)
    return yaml.safe_dump(data, sort_keys=False)


def dataset_names(client: Client) -> list[str]:
    _html, cards = client.predict(api_name="/finetune_datasets")
    return [c["name"] for c in cards]


def test_inspect_reports_format_columns_and_bad_rows_before_anything_is_imported(
    client: Client, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "qa.csv", broken_row=5, duplicate=True)
    report_md, errors, mapping, report, fmt = client.predict(
        handle_file(str(path)), "", "", 0, api_name="/finetune_inspect"
    )
    assert report["format"] == "prompt_completion" and fmt == "prompt_completion"
    assert report["columns"] == ["question", "answer"]
    assert yaml.safe_load(mapping) == {"format": "prompt_completion", "prompt": "question", "completion": "answer"}
    assert (report["total_rows"], report["invalid_rows"], report["unique_rows"]) == (13, 1, 11)
    assert [row[0] for row in errors["data"]] == [5] and errors["data"][0][2] == "answer"  # the file's column
    assert report["duplicates"] == [{"row": 1, "copies": [13]}]
    assert "invalid (rows 5)" in report_md and "1 duplicate" in report_md
    assert "qa" not in dataset_names(client)  # inspecting imports nothing


def test_inspect_with_a_corrected_mapping_and_a_length_limit(client: Client, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa2.csv")
    wrong = "format: prompt_completion\nprompt: answer\ncompletion: question\n"
    _md, errors, _mapping, report, _fmt = client.predict(
        handle_file(str(path)), wrong, BUNDLED, 20, api_name="/finetune_inspect"
    )
    assert report["mapping"]["prompt"] == "answer" and report["max_length"] == 20
    assert report["invalid_rows"] == 12  # every rendered example is longer than 20 tokens with the chat template
    assert {row[2] for row in errors["data"]} == {"length"}
    with pytest.raises(Exception, match=r"mapping\.format"):
        client.predict(handle_file(str(path)), "format: tsv", "", 0, api_name="/finetune_inspect")


def test_upload_rejects_a_file_with_bad_rows_or_drops_them(client: Client, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "arith.csv", broken_row=3)
    with pytest.raises(Exception, match=r"row 3"):
        client.predict(handle_file(str(path)), "client-arith", "", "", "reject", "", 0, api_name="/finetune_upload")
    assert "client-arith" not in dataset_names(client)  # nothing half-imported

    status, _html, cards, _picker = client.predict(
        handle_file(str(path)), "client-arith", "sums", "", "drop", "", 0, api_name="/finetune_upload"
    )
    assert "Imported" in status and "1 invalid row(s) dropped" in status
    card = next(c for c in cards if c["name"] == "client-arith")
    assert card["badge"] == "Supervised" and card["examples_label"] == "11 pairs" and card["versions"] == 1

    again, *_ = client.predict(
        handle_file(str(path)), "client-arith", "", "", "drop", "", 0, api_name="/finetune_upload"
    )
    assert "no new version" in again  # identical content is not a new version

    versions, preview, tokens, plot = client.predict("client-arith", "latest", BUNDLED, 0, api_name="/finetune_dataset")
    assert [row[0] for row in versions["data"]] == ["v1"]
    assert preview["headers"] == ["#", "system", "user", "assistant", "turns"] and len(preview["data"]) == 11
    assert tokens.startswith("Version 1: **11 examples**")
    figure = json.loads(plot["plot"]) if isinstance(plot, dict) and "plot" in plot else plot
    assert "data" in json.dumps(figure)


def test_submit_trains_a_tiny_lora_to_success_and_registers_the_adapter(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    job_id, message = client.predict(job_config(), api_name="/finetune_submit")
    assert job_id and job_id in message

    deadline = time.monotonic() + 240
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = client.predict(job_id, api_name="/finetune_job")
        if data["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            break
        time.sleep(2)
    assert data["state"] == "succeeded", f"job ended {data.get('state')}: {data.get('message')}"
    assert data["progress"] == 1.0 and data["step"] == 2
    assert data["config"]["dataset_hash"]  # the dataset version was pinned at submit
    assert len(data["metrics"]["train_loss"]["values"]) == 2
    artifact = Path(data["artifact_path"])
    assert (artifact / "adapter_config.json").is_file()
    registered = server.home / "adapters" / data["registered_as"]
    assert registered.is_symlink() and registered.resolve() == artifact.resolve()

    table = client.predict("succeeded", api_name="/finetune_jobs")
    assert job_id in [row[0] for row in table["data"]]

    loaded = client.predict(job_id, api_name="/finetune_load")
    assert BUNDLED in loaded and data["registered_as"] in loaded
    models = httpx.get(f"{server.url}/api/inference/models/loaded", timeout=30).json()
    assert data["registered_as"] in json.dumps(models)  # the trained adapter is loaded on the base model


def test_estimate_runs_real_warm_up_steps(client: Client) -> None:
    text = client.predict(job_config(max_steps=20), api_name="/finetune_estimate")
    assert "Estimated duration" in text and "20 steps x" in text and "s/step" in text
    assert "Estimated cost:" in text and "USD" in text and "CPU cores x 0.04 USD/h" in text  # issue 20, point 4


def test_import_from_playground_conversations(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    ids = []
    for i in range(2):
        body = {
            "model": BUNDLED,
            "messages": [
                {"role": "user", "content": f"Name prime number {i + 1}."},
                {"role": "assistant", "content": ["2", "3"][i]},
            ],
        }
        ids.append(httpx.post(f"{server.url}/api/inference/conversation/save", json=body, timeout=30).json()["id"])
    with pytest.raises(Exception, match=r"at least one conversation"):
        client.predict([], "client-convs", "", "reject", api_name="/finetune_import_conversations")
    status, _html, cards, _picker = client.predict(
        ids, "client-convs", "from chats", "reject", api_name="/finetune_import_conversations"
    )
    assert "2 examples from conversations" in status
    assert next(c for c in cards if c["name"] == "client-convs")["examples_label"] == "2 pairs"


def test_bad_config_names_the_field_and_queues_nothing(client: Client) -> None:
    before = client.predict("all", api_name="/finetune_jobs")["data"]
    with pytest.raises(Exception, match=r"lora_r must be between 1 and 512 \(you entered 0\)"):
        client.predict(job_config(lora_r=0), api_name="/finetune_submit")
    with pytest.raises(Exception, match=r"dataset 'no-such-data' not found"):
        client.predict(job_config(dataset="no-such-data"), api_name="/finetune_submit")
    assert client.predict("all", api_name="/finetune_jobs")["data"] == before


def test_cancel_a_scheduled_job_and_resume_explains_why_not(client: Client) -> None:
    job_id, _ = client.predict(
        job_config(name="client-later", not_before="2099-01-01T00:00:00"), api_name="/finetune_submit"
    )
    assert client.predict(job_id, api_name="/finetune_job")["state"] == "queued"
    message, data = client.predict(job_id, api_name="/finetune_cancel")
    assert data["state"] == "cancelled" and "cancelled" in message
    with pytest.raises(Exception, match=r"no checkpoint"):
        client.predict(job_id, api_name="/finetune_resume")
    with pytest.raises(Exception, match=r"already ended"):
        client.predict(job_id, api_name="/finetune_cancel")
