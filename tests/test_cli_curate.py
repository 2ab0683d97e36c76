"""``python -m studio data curate|pipelines`` run as a user types them, on a fresh STUDIO_HOME: import a noisy
file, preview a pipeline, run it into a new version, and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = """\
name: tidy
description: clean and drop refusals and duplicates
steps:
  - step: clean
  - step: refusal
  - step: dedupe
    threshold: 0.9
    apply_to: response
"""


def studio(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("STUDIO_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "studio", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data folder with 12 questions: one reply in HTML, one refusal, one repeated answer, plus the pipeline."""
    rows = [{"prompt": f"Question number {i}?", "completion": f"Answer {i} explains topic {i} in plain words."}
            for i in range(10)]  # fmt: skip
    rows[0]["completion"] = "<p>Answer 0 explains <b>topic 0</b> in plain words.</p>"
    rows.append({"prompt": "Write a poem", "completion": "As an AI, I cannot write poems."})
    rows.append({"prompt": "Question number 3 again?", "completion": rows[3]["completion"]})
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "tidy.yaml").write_text(PIPELINE, encoding="utf-8")
    return tmp_path


def test_preview_then_curate_makes_a_new_version(folder: Path) -> None:
    home = folder / "home"
    ok(studio(home, folder, "datasets", "import", "qa.jsonl"))

    shown = ok(studio(home, folder, "data", "curate", "tidy.yaml", "--dataset", "qa", "--preview")).stdout
    assert "nothing is written" in shown
    assert "kept 10 of 12 rows" in shown
    assert "[refusal] Write a poem → As an AI, I cannot write poems." in shown
    assert "near-duplicates (the first is kept)" in shown
    before: dict[str, Any] = json.loads(ok(studio(home, folder, "datasets", "show", "qa", "--json")).stdout)
    assert [v["number"] for v in before["versions"]] == [1]

    ran = ok(studio(home, folder, "data", "curate", "tidy.yaml", "--dataset", "qa", "--save")).stdout
    table = {line.split()[0]: line.split()[1:5] for line in ran.splitlines() if line.split()[:1] in (
        ["clean"], ["refusal"], ["dedupe"])}  # fmt: skip
    assert table == {
        "clean": ["12", "12", "1", "0"],
        "refusal": ["12", "11", "0", "1"],
        "dedupe": ["11", "10", "0", "1"],
    }
    assert "created 'qa' version 2: 10 supervised examples" in ran
    assert "saved pipeline 'tidy'" in ran

    after: dict[str, Any] = json.loads(ok(studio(home, folder, "datasets", "show", "qa", "--json")).stdout)
    v2 = after["version"]
    assert (v2["number"], v2["source"], v2["num_examples"]) == (2, "curate", 10)
    assert v2["parent_version_id"] == before["version"]["id"]
    assert v2["lineage"]["pipeline"]["name"] == "tidy"
    stored = (home / v2["path"]).read_text(encoding="utf-8")
    assert "<b>" not in stored and "As an AI" not in stored

    listed = json.loads(ok(studio(home, folder, "data", "pipelines", "--json")).stdout)
    assert {"name": "tidy", "where": "saved"}.items() <= next(p for p in listed if p["name"] == "tidy").items()
    assert any(p["name"] == "sft-clean" and p["where"] == "shipped" for p in listed)
    # the saved pipeline runs again by name: the curated version is already clean, so nothing new is stored
    again = ok(studio(home, folder, "data", "curate", "tidy", "--dataset", "qa")).stdout
    assert "already has these rows as version 2" in again


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("name: harsh\nsteps:\n  - {step: length, min_chars: 100000}\n", "would drop every one of the 12 rows"),
        ("name: bad\nsteps:\n  - {step: dedupe, threshold: 0.2}\n", "steps[0].threshold: Threshold must be between"),
    ],
)
def test_refusals_exit_2_and_write_nothing(folder: Path, pipeline: str, message: str) -> None:
    home = folder / "home"
    ok(studio(home, folder, "datasets", "import", "qa.jsonl"))
    (folder / "p.yaml").write_text(pipeline, encoding="utf-8")

    proc = studio(home, folder, "data", "curate", "p.yaml", "--dataset", "qa")

    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr.strip().splitlines()[-1]
    shown = json.loads(ok(studio(home, folder, "datasets", "show", "qa", "--json")).stdout)
    assert [v["number"] for v in shown["versions"]] == [1]
