"""The feedback loop end to end on a tiny model: battles → votes → preference export (a dataset version with
lineage) → a DPO job run by the worker for a few steps (weights change; adapter registered) → the adapter back
into Compare against its base. Plus a reward-model job on the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio.compare import battles, feedback
from studio.compare.export import export_preferences
from studio.context import AppContext
from studio.inference.params import make_sampling_params
from studio.jobs import queue
from studio.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"


def make_tiny_model(path: Path, bundled: Path) -> Path:
    """A 2-layer random Llama with the bundled model's tokenizer (and chat template), saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(bundled), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture
def home(studio_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    make_tiny_model(home / "models" / "org--tiny", studio_home / "models" / BUNDLED_DIR)
    return home


def worker_once(home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), STUDIO_THREADS="2")
    env.pop("STUDIO_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "studio", "worker", "--once", "--poll", "0.1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_votes_to_dpo_adapter_and_back_into_compare(home: Path) -> None:
    from safetensors.torch import load_file

    ctx = AppContext.create(Settings(home=home, dtype="float32"))
    try:
        params = make_sampling_params(temperature=1.0, max_tokens=12, seed=None, stop=[])
        prompts = ["Say hello", "Name a fruit", "Count to three", "Tell a joke"]
        steps = list(battles.run_batch(ctx.engines, ctx.db, "org/tiny", "org/tiny", prompts, params, tags=["loop"]))
        batch = battles.batch_battles(ctx.db, steps[-1].batch_id)
        for battle, vote in zip(batch, ["a", "b", "tie", "a"], strict=True):
            battles.cast_vote(ctx.db, battle.id, vote)
        exported = export_preferences(ctx.datasets, ctx.db, "loop-prefs")
        assert exported.created and exported.battles == 3 and exported.skipped_ties == 1
        version = ctx.datasets.get_version("loop-prefs")
        assert version.lineage["battle_ids"] == [batch[0].id, batch[1].id, batch[3].id]
        examples = ctx.datasets.load_examples(version)
        assert examples[1]["chosen"] == batch[1].reply_b and examples[1]["rejected"] == batch[1].reply_a

        text = feedback.preference_job_yaml("dpo", "loop-prefs", exported.version, "org/tiny", max_steps=3)
        config = yaml.safe_load(text)
        assert config["kind"] == "dpo" and config["method"] == "lora" and config["beta"] == 0.1
        config.update(batch_size=2, max_length=64, loss_type="ipo", beta=0.2)
        job = feedback.submit_preference_job(ctx.settings, ctx.db, yaml.safe_dump(config))
        assert job.config["dataset_hash"] == version.content_hash
    finally:
        ctx.close()

    ran = worker_once(home)
    assert ran.returncode == 0, ran.stderr[-3000:]
    ctx = AppContext.create(Settings(home=home, dtype="float32"))
    try:
        done = queue.get_job(ctx.db, job.id)
        assert done.state == "succeeded", done.message + queue.log_tail(ctx.settings, job.id)
        assert done.result["steps"] == 3 and done.result["registered_as"] == "dpo-loop-prefs"
        adapter_dir = home / "adapters" / "dpo-loop-prefs"
        assert (adapter_dir / "adapter_config.json").is_file()
        run = json.loads((adapter_dir / "whetstone-run.json").read_text())
        assert run["base_model"] == "org/tiny" and run["method_params"]["loss_type"] == "ipo"
        # LoRA B matrices start at zero: after DPO steps they are not, so the adapter changes the model
        weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
        lora_b = [t for k, t in weights.items() if "lora_B" in k]
        assert lora_b and any(float(t.abs().sum()) > 0 for t in lora_b)

        # closing the loop: the adapter goes back into Compare against its base
        trained = feedback.adapter_from_job(ctx.db, job.id)
        assert trained.contenders == ["org/tiny", "org/tiny + dpo-loop-prefs"]
        assert "org/tiny + dpo-loop-prefs" in battles.contender_choices(ctx.engines, ctx.settings)
        session = battles.NamedSession()
        greedy = make_sampling_params(temperature=0, max_tokens=8, stop=[])
        final = [v for v, _ in battles.named_turn(ctx.engines, session, trained.contenders, "Say hello", greedy)][-1]
        assert all(v.error is None and v.stats for v in final)
        assert final[0].text and final[1].text
        assert session.histories[1][-1].content == final[1].text
    finally:
        ctx.close()


def test_reward_model_job_on_preference_pairs(home: Path) -> None:
    ctx = AppContext.create(Settings(home=home, dtype="float32"))
    try:
        examples = [
            {"prompt": [{"role": "user", "content": f"Q{i}"}], "chosen": f"good answer {i}", "rejected": "bad"}
            for i in range(4)
        ]
        ctx.datasets.create_version("rm-prefs", examples, source="feedback", kind="preference")
        text = feedback.preference_job_yaml("reward", "rm-prefs", None, "org/tiny", max_steps=2)
        job = feedback.submit_preference_job(ctx.settings, ctx.db, text.replace("max_length: 512", "max_length: 64"))
        with pytest.raises(Exception, match="preference pairs"):
            ctx.datasets.create_version(
                "sft", [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
            )
            feedback.submit_preference_job(ctx.settings, ctx.db, text.replace("rm-prefs", "sft"))
    finally:
        ctx.close()
    ran = worker_once(home)
    assert ran.returncode == 0, ran.stderr[-3000:]
    ctx = AppContext.create(Settings(home=home))
    try:
        done = queue.get_job(ctx.db, job.id)
        assert done.state == "succeeded", done.message + queue.log_tail(ctx.settings, job.id)
        artifact = Path(done.result["artifact_path"])
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(artifact), local_files_only=True)
        assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
        assert not (artifact / "adapter_config.json").exists()  # LoRA merged: a plain classifier
        assert not (home / "adapters" / "reward-rm-prefs").exists()  # not a chat adapter: not registered
    finally:
        ctx.close()
