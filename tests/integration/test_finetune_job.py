"""The one-command fine-tune, as a user runs it: `studio jobs submit` of the shipped LoRA example (shortened to a
few steps), `studio worker --once` trains it in a job process, `studio jobs show --json` reports the artifact,
and the registered adapter loads by name and changes the bundled model's answer."""

from __future__ import annotations

import json
import os
import re
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
BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"


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


@pytest.fixture
def tiny_home(studio_home: Path, tmp_path: Path) -> Path:
    """A home whose models folder holds a 2-layer random Llama with the bundled tokenizer (a real job in seconds)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    home = tmp_path / "home"
    tiny = home / "models" / "tiny-llama"
    tiny.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(tiny), safe_serialization=True)
    tokenizer.save_pretrained(str(tiny))
    return home


def test_job_log_has_no_progress_bars_or_library_warnings(tiny_home: Path, tmp_path: Path) -> None:
    """Issue 15, point 12: the log the monitor shows was full of tqdm bars ('Tokenizing train dataset: 100%|███…')
    and third-party warnings (bitsandbytes asking for a missing module). A real job on a tiny model, run by the
    worker in its own process: the log is the studio's own time-stamped lines, and it says what the bars showed."""
    from studio.db.engine import Database
    from studio.training.service import job_view

    example = yaml.safe_load((ROOT / "configs/finetune/examples/lora-smollm2.yaml").read_text(encoding="utf-8"))
    example.update(
        base_model=str(tiny_home / "models" / "tiny-llama"), max_steps=2, eval_every_steps=1,
        checkpoint_every_steps=1, max_length=128, name="log-check", output_name="log-check",
    )  # fmt: skip
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(example), encoding="utf-8")
    submitted = studio(tiny_home, "jobs", "submit", str(config))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    ran = studio(tiny_home, "worker", "--once", "--poll", "0.1", timeout=300)
    assert ran.returncode == 0, ran.stderr

    settings = Settings(home=tiny_home)
    db = Database(settings.db_url)
    try:
        view = job_view(settings, db, job_id, log_lines=1000)
    finally:
        db.dispose()
    log = view.log_tail
    assert view.state == "succeeded", view.message + "\n" + log
    for bar in ("\r", "█", "|#", "it/s]", "examples/s]", "%|"):
        assert bar not in log, f"a progress bar ({bar!r}) in the job log:\n{log}"
    assert "bitsandbytes" not in log.lower() and "kernels" not in log.lower(), log
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [^,]")  # runtime.log's stamp, not logging's "…:ss,mmm"
    foreign = [line for line in log.splitlines() if not stamped.match(line)]
    assert not foreign, "lines the job did not write itself:\n" + "\n".join(foreign)
    # what the bars used to show, said once in words
    assert re.search(r"loaded the base model in \d", log), log
    assert re.search(r"tokenised \d+ training and \d+ evaluation examples in \d", log), log
    assert "training completed at step 2/2" in log
