"""Exports as jobs: the CLI queues one and sees it through a worker process; an export job killed with ``kill -9``
ends ``failed`` with the reason and leaves nothing registered (its hidden partial folder is removed by the next
export)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.db.engine import Database
from studio.export.job import ExportConfig, run_export
from studio.jobs import queue
from studio.jobs.reporter import MemoryReporter
from studio.settings import Settings
from tests.conftest import BUNDLED_DIR_NAME, make_lora_adapter
from tests.integration.test_compare_dpo import make_tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("export-job-home")
    Settings(home=home, hf_cache=home / "hf-cache").ensure_dirs()
    (home / "models" / BUNDLED_DIR_NAME).symlink_to(studio_home / "models" / BUNDLED_DIR_NAME)
    tiny = make_tiny_model(home / "models" / "org--tiny", studio_home / "models" / BUNDLED_DIR_NAME)
    make_lora_adapter(tiny, home / "adapters" / "tiny-lora", seed=4)
    return home


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), STUDIO_THREADS="2", HF_HUB_OFFLINE="1")
    env.pop("STUDIO_DATABASE_URL", None)
    return env


def test_cli_export_runs_as_a_job_and_prints_its_result(home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "studio", "export", "merged", "org/tiny", "--adapter", "tiny-lora",
         "--name", "cli-merged", "--json"],
        env=_env(home), cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["state"] == "succeeded"
    assert out["result"]["registered_as"] == "cli-merged"
    assert out["result"]["verification"]["prompts_identical"] == 8
    assert (home / "exports" / "cli-merged" / "manifest.json").is_file()
    manifest = json.loads((home / "exports" / "cli-merged" / "manifest.json").read_text())
    assert manifest["job_id"] == out["job_id"]
    listed = subprocess.run([sys.executable, "-m", "studio", "export", "list", "--check", "--json"],
                            env=_env(home), cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == ["cli-merged"]
    again = subprocess.run(
        [sys.executable, "-m", "studio", "export", "merged", "org/tiny", "--name", "cli-merged"],
        env=_env(home), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2 and "exists already" in again.stderr


@pytest.mark.slow
def test_an_export_killed_with_sigkill_fails_with_the_reason_and_registers_nothing(home: Path) -> None:
    settings = Settings(home=home, hf_cache=home / "hf-cache")
    db = Database(settings.db_url)
    # the bundled model's float32 reference answers take seconds: time enough to kill the job in the middle
    job = queue.submit(db, "export", {"format": "merged", "model": "default", "name": "killed"}, settings=settings)
    worker = subprocess.Popen(
        [sys.executable, "-m", "studio", "worker", "--once", "--poll", "0.1"],
        env=_env(home), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        row = queue.get_job(db, job.id)
        while time.monotonic() < deadline:
            row = queue.get_job(db, job.id)
            if row.state == "running" and row.pid and row.message.startswith("reference answers"):
                break
            assert row.state in ("queued", "running"), row.message
            time.sleep(0.1)
        partials = list((home / "exports").glob(".partial-killed-*"))
        assert partials, "the export should be building in a partial folder"
        assert row.pid is not None
        os.kill(row.pid, signal.SIGKILL)
        assert worker.wait(timeout=120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    final = queue.get_job(db, job.id)
    assert final.state == "failed"
    assert "killed by signal 9" in final.message
    assert not (home / "exports" / "killed").exists()
    assert not (home / "models" / "killed").exists() and not (home / "models" / "killed").is_symlink()
    assert [p.name for p in (home / "exports").iterdir() if not p.name.startswith(".")] == [
        p.name for p in (home / "exports").iterdir() if (p / "manifest.json").is_file()
    ]  # every visible export is a finished one
    reporter = MemoryReporter()
    run_export(ExportConfig(format="triton", model="org/tiny", name="after-kill"), settings, reporter)
    assert not list((home / "exports").glob(".partial-killed-*"))  # the next export cleaned up
    assert any("left by a killed job" in line for line in reporter.lines)
