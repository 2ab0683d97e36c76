"""``python -m studio``, run exactly as a user types it: listing models, a helpful error, the help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.settings import BUNDLED_MODEL_ID

ROOT = Path(__file__).resolve().parent.parent


def run_studio(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "STUDIO_HOME", "STUDIO_HF_CACHE"):
        env.pop(name, None)
    if home is not None:
        env.update(STUDIO_HOME=str(home), STUDIO_HF_CACHE=str(home / "hf-cache"))
    return subprocess.run(
        [sys.executable, "-m", "studio", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_models_list_shows_the_bundled_model_once(studio_home: Path) -> None:
    proc = run_studio("models", "list", home=studio_home)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "SOURCE", "FORMAT", "QUANT", "SIZE", "STATUS"]
    bundled = [line.split() for line in lines if line.startswith(BUNDLED_MODEL_ID + " ")]
    # The converted safetensors copy is not listed as a second model.
    assert len(bundled) == 1
    assert bundled[0][1:4] == ["bundled", "gguf", "Q4_1"]
    assert bundled[0][-1] == "ok"


@pytest.mark.slow
def test_models_list_json(studio_home: Path) -> None:
    proc = run_studio("models", "list", "--json", home=studio_home)

    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    by_id = {e["id"]: e for e in entries}
    assert len(by_id) == len(entries)
    entry = by_id[BUNDLED_MODEL_ID]
    assert entry["source"] == "bundled"
    assert entry["format"] == "gguf"
    assert entry["quant"] == "Q4_1"
    assert entry["path"].endswith(".gguf") and Path(entry["path"]).is_file()
    assert entry["size_bytes"] == Path(entry["path"]).stat().st_size
    assert entry["problem"] is None


def test_models_prepare_unknown_model_exits_2_with_a_message(tmp_path: Path) -> None:
    proc = run_studio("models", "prepare", "nope", home=tmp_path / "home")

    assert proc.returncode == 2
    assert "model 'nope' not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "$STUDIO_HOME/models" in proc.stderr  # it says where it looked, without absolute paths (issue 14)


def test_help_lists_the_commands() -> None:
    proc = run_studio("--help")

    assert proc.returncode == 0
    assert "serve" in proc.stdout
    assert "models" in proc.stdout


def test_serve_help_shows_its_options() -> None:
    proc = run_studio("serve", "--help")

    assert proc.returncode == 0
    for option in ("--host", "--port", "--share", "--no-preload"):
        assert option in proc.stdout
