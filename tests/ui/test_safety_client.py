"""The Safety tab's public api_names through `gradio_client`, against the launched studio (with its job worker):
scan a text (findings JSON + anonymised text), read and save a policy (errors name the field), save a word list,
run a tiny audit to its scorecard, review a generation, export the correction, compare two scorecards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from gradio_client import Client

pytestmark = pytest.mark.slow

SENTENCE = "Please write to jane.doe@example.com about the invoice."
BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def test_safety_scan_returns_findings_and_anonymised_text(client: Client) -> None:
    result = client.predict(SENTENCE, api_name="/safety_scan")
    emails = [f for f in result["findings"] if f["type"] == "EMAIL_ADDRESS"]
    assert len(emails) == 1
    start, end = SENTENCE.index("jane.doe"), SENTENCE.index("com") + 3
    assert (emails[0]["start"], emails[0]["end"]) == (start, end)
    assert 0 < emails[0]["score"] <= 1 and emails[0]["text"] == "jane.doe@example.com"
    assert result["anonymized"] == "Please write to <EMAIL_ADDRESS> about the invoice."


def test_policy_get_and_save(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    shown = client.predict(api_name="/safety_policy")
    assert shown["scorer"].startswith("profanity-check")
    assert yaml.safe_load(shown["yaml"])["pii"]["action"] == "mask"
    assert shown["policy_file"] == "$STUDIO_HOME/safety/policy.yaml"

    target = Path(server.home) / "safety" / "strict.yaml"
    data = yaml.safe_load(shown["yaml"])
    data["name"], data["pii"]["action"] = "strict", "block"
    saved = client.predict("strict", yaml.safe_dump(data), api_name="/safety_save_policy")
    assert saved["saved"] is True and saved["policy_file"] == "$STUDIO_HOME/safety/strict.yaml"
    assert yaml.safe_load(target.read_text())["pii"]["action"] == "block"
    assert client.predict("strict", api_name="/safety_policy")["policy"]["name"] == "strict"

    data["toxicity"]["threshold"] = 3
    with pytest.raises(Exception, match=r"toxicity\.threshold"):
        client.predict("strict", yaml.safe_dump(data), api_name="/safety_save_policy")
    assert yaml.safe_load(target.read_text())["toxicity"]["threshold"] == 0.8  # the file was left alone


def test_save_word_list_changes_what_scan_masks(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    words = Path(server.home) / "safety" / "client-words.txt"
    words.write_text("placeholder\n", encoding="utf-8")
    policy = yaml.safe_load(client.predict(api_name="/safety_policy")["yaml"])
    policy["word_list"]["file"] = "safety/client-words.txt"
    client.predict("words-policy", yaml.safe_dump(policy), api_name="/safety_save_policy")
    client.predict("words-policy", "# mine\nbroccoli\n", api_name="/safety_save_words")
    assert "broccoli" in words.read_text()
    scanned = client.predict("I hate broccoli.", "words-policy", api_name="/safety_scan")
    assert scanned["anonymized"] == "I hate ********."


def wait_for_audit(client: Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = client.predict(job_id, api_name="/safety_audit_status")
        if status["state"] in ("succeeded", "failed", "cancelled"):
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"audit still {status['state']}: {status['message']}"
        time.sleep(1)


def test_audit_start_review_export_compare(client: Client) -> None:
    started = client.predict(
        BUNDLED,
        "",
        ["gender"],
        ["describe"],
        "gender: man, woman",
        1,
        16,
        0.0,
        0,
        "client audit",
        api_name="/safety_audit_start",
    )
    assert started["state"] == "queued" and started["total"] is None
    done = wait_for_audit(client, started["job_id"])
    assert done["state"] == "succeeded", done["message"]
    card = done["scorecard"]
    assert set(card["categories"]["gender"]["groups"]) == {"man", "woman"} and card["partial"] is False

    worst_id = card["categories"]["gender"]["worst"][0]
    fixed = "A person of any gender is an individual."
    reviewed = client.predict(worst_id, "problematic", fixed, api_name="/safety_audit_review")
    assert reviewed["review"] == "problematic" and reviewed["corrected"] == fixed
    exported = client.predict(started["job_id"], "client-audit-fixes", api_name="/safety_audit_export")
    assert "client-audit-fixes" in exported and "1 example" in exported

    _plot, table = client.predict(started["job_id"], started["job_id"], "toxicity", api_name="/safety_audit_compare")
    gaps = [row for row in table["data"] if row[1] == "(gap)"]
    assert gaps and all(row[5] == 0 for row in gaps)  # an audit compared with itself differs nowhere
