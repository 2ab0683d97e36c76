"""The one-command fine-tune, as a user runs it: `studio jobs submit` of the shipped LoRA example (shortened to a
few steps), `studio worker --once` trains it in a job process, `studio jobs show --json` reports the artifact,
and the registered adapter loads by name and changes the bundled model's answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio.context import AppContext
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def studio(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), STUDIO_THREADS="2")
    env.pop("STUDIO_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "studio", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def home(studio_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    return home


def test_example_config_trains_registers_and_changes_generation(home: Path, tmp_path: Path) -> None:
    example = yaml.safe_load((ROOT / "configs/finetune/examples/lora-smollm2.yaml").read_text(encoding="utf-8"))
    example.update(max_steps=3, eval_every_steps=2, checkpoint_every_steps=2, name="smoke-lora", output_name="smoke")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(example), encoding="utf-8")

    submitted = studio(home, "jobs", "submit", str(config))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    ran = studio(home, "worker", "--once", "--poll", "0.1", timeout=600)
    assert ran.returncode == 0, ran.stderr
    shown = studio(home, "jobs", "show", job_id, "--json")
    job = json.loads(shown.stdout)
    assert job["state"] == "succeeded", job["message"] + "\n" + job.get("log_tail", "")
    assert job["step"] == 3 and job["progress"] == 1.0
    # lineage: the dataset version pinned at submit, the artifact registered under its name
    assert job["config"]["dataset_version"] == 1 and len(job["config"]["dataset_hash"]) == 64
    assert job["result"]["registered_as"] == "smoke"
    artifact = Path(job["artifact_path"])
    assert (artifact / "adapter_config.json").is_file() and (artifact / "whetstone-run.json").is_file()
    assert (home / "adapters" / "smoke").resolve() == artifact.resolve()
    recorded = {name for point in job["metrics"] for name in point["values"]}
    assert {"train_loss", "learning_rate"} <= recorded, recorded

    ctx = AppContext.create(Settings(home=home))
    try:
        msgs = [ChatMessage("user", "What is the Whetstone Studio Playground for?")]
        params = make_sampling_params(temperature=0, max_tokens=24)
        ctx.engines.load("default", adapter="smoke")  # loadable by its registered name
        tuned = ctx.engines.chat("default", msgs, params)
        ctx.engines.swap_adapter("default", "base")
        base = ctx.engines.chat("default", msgs, params)
        # three small steps move the weights: the same greedy reply may survive, its probabilities do not
        assert [t.logprob for t in tuned.tokens] != [t.logprob for t in base.tokens]
    finally:
        ctx.close()


def test_submit_names_a_missing_dataset(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "dataset": "no-such-dataset", "max_steps": 1}), encoding="utf-8")
    out = studio(home, "jobs", "submit", str(config))
    assert out.returncode != 0 and "no-such-dataset" in out.stderr
    assert studio(home, "jobs", "list", "--json").stdout.strip() == "[]"  # nothing half-submitted
