"""``python -m studio datasets import|list|show`` run as a user types them, in the folder that holds the data (as
LLaMA-Factory's ``data/`` does: the data files beside their ``dataset_info.json``), on a fresh STUDIO_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = {"name": "get_time", "description": "The time in a city", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A LLaMA-Factory style data folder: a tool-calling file with its own column names, described in
    dataset_info.json, plus a KTO file and a multimodal file."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [
        {
            "id": f"row-{i}",
            "dialog": [
                {"speaker": "person", "text": f"What time is it in city {i}?"},
                {"speaker": "tool_call", "text": json.dumps({"name": "get_time", "arguments": {"city": f"c{i}"}})},
                {"speaker": "tool_output", "text": f"{i}:00"},
                {"speaker": "bot", "text": f"It is {i}:00 in city {i}."},
            ],
            "funcs": json.dumps([TOOL]),
        }
        for i in range(10)
    ]
    (folder / "clock.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {
        "clock": {
            "file_name": "clock.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "tools": "funcs"},
            "tags": {
                "role_tag": "speaker",
                "content_tag": "text",
                "user_tag": "person",
                "assistant_tag": "bot",
                "function_tag": "tool_call",
                "observation_tag": "tool_output",
            },
        },
        "other": {"file_name": "other.json"},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    kto = [{"prompt": f"Q{i}?", "completion": f"A{i}.", "label": i % 2 == 0} for i in range(10)]
    (folder / "feedback.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kto), encoding="utf-8")
    images = [{"messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "A cat."}],
               "images": ["cat.png"]}]  # fmt: skip
    (folder / "pictures.json").write_text(json.dumps(images), encoding="utf-8")
    return folder


def datasets_cli(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT))
    env.pop("STUDIO_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "studio", "datasets", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def test_import_reads_the_dataset_info_beside_the_file_then_list_and_show(data: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"

    out: dict[str, Any] = json.loads(ok(datasets_cli(home, data, "import", "clock.json", "--json")).stdout)

    assert out["mapping_source"] == "dataset_info.json beside the file"
    assert out["created"] is True
    assert out["version"]["kind"] == "supervised" and out["version"]["num_examples"] == 10
    report = out["report"]
    assert report["format"] == "sharegpt" and report["mapping"]["tools"] == "funcs"
    assert report["unused_columns"] == ["id"]  # reported, not silently dropped
    stored = (home / out["version"]["path"]).read_text(encoding="utf-8").splitlines()
    first = json.loads(stored[0])
    assert first["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_time", "arguments": {"city": "c0"}}}],
    }
    assert first["messages"][2] == {"role": "tool", "content": "0:00"}
    assert first["tools"] == [{"type": "function", "function": TOOL}]

    listed = json.loads(ok(datasets_cli(home, data, "list", "--json")).stdout)
    card = next(c for c in listed if c["name"] == "clock")
    assert (card["kind"], card["format"], card["num_examples"]) == ("supervised", "sharegpt", 10)
    table = ok(datasets_cli(home, data, "list")).stdout
    assert any(line.split()[:3] == ["clock", "supervised", "sharegpt"] for line in table.splitlines())

    shown = json.loads(ok(datasets_cli(home, data, "show", "clock", "--json")).stdout)
    assert shown["version"]["lineage"]["unused_columns"] == ["id"]
    assert shown["preview"]["rows"][0][3] == "It is 0:00 in city 0."
    text = ok(datasets_cli(home, data, "show", "clock")).stdout
    assert "v1 left these columns of its file out: id" in text


def test_import_prints_the_report_and_the_kind(data: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"

    dry = ok(datasets_cli(home, data, "import", "feedback.jsonl", "--dry-run"))
    assert "(kind kto)" in dry.stdout and "nothing imported (--dry-run)" in dry.stdout
    assert "feedback" not in ok(datasets_cli(home, data, "list")).stdout

    done = ok(datasets_cli(home, data, "import", "feedback.jsonl", "--name", "thumbs", "--format", "prompt_completion"))
    assert "imported 'thumbs' version 1: 10 kto examples" in done.stdout
    assert "mapping:  --format" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pictures.json",), "multimodal dataset"),
        (("clock.json", "--format", "alpaca"), "10 of 10 rows are invalid"),
        (("clock.json", "--mapping", '{"formatting": "sharegpt", "columns": {"images": "x"}}'), "multimodal dataset"),
        (("/etc/hostname",), "is outside the folders the studio may use (the current folder and $STUDIO_HOME)"),
        (("missing.json",), "no file 'missing.json'"),
    ],
)
def test_refusals_exit_2_and_say_why(data: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = datasets_cli(tmp_path / "home", data, "import", *args)

    assert proc.returncode == 2, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]  # after the INFO log lines
    assert last.startswith("error: ") and message in last
