"""``studio models pull|list|rm`` exactly as a user types them, against a loopback Hub (tests/fake_hub.py): a download
lands in the Hugging Face cache and is listed, a GGUF quant is picked by name, the offline and gated messages, the
token never written anywhere, and a download whose process is killed with ``kill -9`` mid-file that, resumed, goes
on from the bytes already on disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from studio.db.engine import Database
from studio.db.tables import Job
from studio.jobs import queue
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
TOKEN = "hf_cli_secret_token_77aa"


def blob(n: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (n // len(block) + 1))[:n]


def model_files(weights_bytes: int, seed: int = 1) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"model_type": "llama", "vocab_size": 8}).encode(),
        "tokenizer_config.json": json.dumps({"chat_template": "{{ messages }}"}).encode(),
        "model.safetensors": blob(weights_bytes, seed),
        "README.md": b"---\nlicense: apache-2.0\nlanguage: [en]\n---\n",
    }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def studio_env(home: Path, hub: FakeHub | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "STUDIO_HF_TOKEN", "HF_TOKEN", "STUDIO_DATABASE_URL"):
        env.pop(name, None)
    env.update(
        STUDIO_HOME=str(home),
        STUDIO_HF_CACHE=str(home / "hf-cache"),
        HF_TOKEN_PATH=str(home / "no-saved-token"),
        PYTHONPATH=str(ROOT),
    )
    if hub is not None:
        env.update(hub.env())
    env.update(extra)
    return env


def studio(home: Path, hub: FakeHub | None, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "studio", *args],
        cwd=ROOT,
        env=studio_env(home, hub, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def listed(home: Path, hub: FakeHub | None) -> dict[str, dict]:
    proc = studio(home, hub, "models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return {e["id"]: e for e in json.loads(proc.stdout)}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_pull_list_and_rm_a_transformers_model_and_a_gguf_quant(hub: FakeHub, home: Path) -> None:
    files = model_files(3 * MiB // 2)
    repo = hub.add("org/tiny", {**files, "pytorch_model.bin": blob(1000, 9)})
    hub.add(
        "org/tiny-GGUF", {"README.md": b"# x\n", "tiny.Q4_K_M.gguf": blob(3000, 2), "tiny.Q8_0.gguf": blob(5000, 3)}
    )

    pulled = studio(home, hub, "models", "pull", "org/tiny")
    assert pulled.returncode == 0, pulled.stderr
    assert "4 files" in pulled.stdout and "1.5 MB to download" in pulled.stdout
    assert "downloaded org/tiny" in pulled.stdout and "models: org/tiny" in pulled.stdout
    snapshot = home / "hf-cache" / "models--org--tiny" / "snapshots" / repo.sha
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (snapshot / "pytorch_model.bin").exists()  # one weight format is enough

    gguf = studio(home, hub, "models", "pull", "org/tiny-GGUF", "--file", "q8_0")
    assert gguf.returncode == 0, gguf.stderr
    models = listed(home, None)  # listing needs no Hub
    assert models["org/tiny"]["source"] == "hf_cache" and models["org/tiny"]["problem"] is None
    assert models["org/tiny-GGUF:Q8_0"]["quant"] == "Q8_0"
    assert "org/tiny-GGUF:Q4_K_M" not in models

    removed = studio(home, None, "models", "rm", "org/tiny")
    assert removed.returncode == 0, removed.stderr
    assert "removed org/tiny" in removed.stdout
    assert not snapshot.exists()
    assert studio(home, None, "models", "rm", "org/tiny-GGUF:Q8_0").returncode == 0
    models = listed(home, None)
    assert "org/tiny" not in models and "org/tiny-GGUF:Q8_0" not in models


def test_offline_pull_says_so_and_queues_nothing(hub: FakeHub, home: Path) -> None:
    hub.add("org/tiny", model_files(1000))
    proc = studio(home, hub, "models", "pull", "org/tiny", HF_HUB_OFFLINE="1")
    assert proc.returncode == 2
    assert "HF_HUB_OFFLINE=1" in proc.stderr and "Traceback" not in proc.stderr
    assert hub.requests == []  # not a single request left the machine
    assert not (home / "hf-cache" / "models--org--tiny").exists()
    db = Database(f"sqlite:///{home / 'studio.db'}")
    try:
        assert queue.list_jobs(db, kind="download") == []
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_gated_repo_needs_the_token_and_the_token_is_written_nowhere(hub: FakeHub, home: Path) -> None:
    hub.add("org/gated", model_files(2000), gated_token=TOKEN)

    refused = studio(home, hub, "models", "pull", "org/gated")
    assert refused.returncode == 2
    assert "gated" in refused.stderr and "401" in refused.stderr and "HF_TOKEN" in refused.stderr

    pulled = studio(home, hub, "models", "pull", "org/gated", HF_TOKEN=TOKEN)
    assert pulled.returncode == 0, pulled.stderr
    assert "org/gated" in listed(home, None)
    assert TOKEN not in pulled.stdout + pulled.stderr
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert TOKEN.encode() not in path.read_bytes(), f"the token was written to {path}"


@pytest.mark.slow
def test_a_download_killed_mid_file_resumes_from_its_bytes(hub: FakeHub, home: Path) -> None:
    files = model_files(4 * MiB + 321, seed=5)
    repo = hub.add("org/big", files)
    hub.rate = 1 * MiB  # about 4 s for the weights: time to look at the row and to kill it mid-file
    env = studio_env(home, hub)
    worker = subprocess.Popen(
        [sys.executable, "-m", "studio", "worker", "--device", "download", "--poll", "0.2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    db = Database(f"sqlite:///{home / 'studio.db'}")
    try:
        queued = studio(home, hub, "models", "pull", "org/big", "--background")
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.split("queued as job ")[1].split()[0]

        def row() -> Job:
            return queue.get_job(db, job_id)

        # progress reaches the job row while the file streams in: bytes (KiB), total, ETA, speed in the message
        wait_for(lambda: row().state == "running" and row().step >= 1024, 120, "the first MiB of the weights")
        running = row()
        assert running.total_steps == sum(len(d) for d in files.values()) // 1024
        assert 0 < running.progress < 1 and running.eta_s is not None
        assert "/s" in running.message and "model.safetensors" in running.message
        assert running.pid is not None
        blobs = home / "hf-cache" / "models--org--big" / "blobs"

        def on_disk() -> int:
            return sum(p.stat().st_size for p in blobs.glob("*.incomplete"))

        # huggingface_hub counts a chunk before it writes it: the row may be one chunk ahead of the disk (under load
        # the kill came before the first MiB was written, and the partial file was empty)
        wait_for(lambda: on_disk() >= MiB, 60, "the first MiB on disk")
        os.kill(running.pid, signal.SIGKILL)
        wait_for(lambda: row().state == "failed", 60, "the worker to record the killed job")
        assert "signal 9" in row().message
        assert "org/big" not in listed(home, None)  # nothing half-downloaded is registered
        partial = list((home / "hf-cache" / "models--org--big" / "blobs").glob("*.incomplete"))
        assert len(partial) == 1 and partial[0].stat().st_size >= MiB

        hub.rate = None
        resumed = studio(home, hub, "jobs", "resume", job_id)
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: row().state in queue.FINAL_STATES, 120, "the resumed download")
        assert row().state == "succeeded", row().message

        ranges = [r.range for r in hub.file_requests("model.safetensors")]
        assert ranges[0] is None and ranges[-1] is not None
        assert int(ranges[-1].removeprefix("bytes=").rstrip("-")) >= MiB  # from the kept bytes, not from 0
        snapshot = home / "hf-cache" / "models--org--big" / "snapshots" / repo.sha
        assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
        assert not list((home / "hf-cache" / "models--org--big" / "blobs").glob("*.incomplete"))
        assert listed(home, None)["org/big"]["problem"] is None
        assert list((home / "downloads").glob("*.json")) == []
    finally:
        db.dispose()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
