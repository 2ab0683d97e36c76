"""Real training runs of every method on a tiny local Llama (random weights, the bundled tokenizer and chat
template): the trainable weights move, the artifact is saved and reloads, and it changes greedy generation.
Plus the prompt mask, cancel with a checkpoint, resume, and early stopping."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from studio.jobs.reporter import MemoryReporter
from studio.training.config import FinetuneConfig, qlora_available
from studio.training.train import RUN_FILE, read_run_file, train

pytestmark = pytest.mark.slow

BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"

EXAMPLES: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    }
    for a in range(1, 5)
    for b in range(1, 4)
]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    """Two cores are shared with other work: one torch thread keeps the runs predictable."""
    import torch

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_model(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama saved as safetensors, with the bundled tokenizer (and its chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def make_config(method: str, **overrides: Any) -> FinetuneConfig:
    values: dict[str, Any] = {
        "name": f"test-{method}",
        "dataset": "arithmetic",
        "dataset_version": 3,
        "dataset_hash": "ab12cd34ef",
        "method": method,
        "max_steps": 3,
        "batch_size": 4,
        "max_length": 64,
        "validation_split": 0.0,
        "checkpoint_every_steps": 100,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
    }
    # high learning rates so three steps visibly move a random model's greedy output
    values["learning_rate"] = {"full": 1e-2, "prefix": 5e-2, "adapter": 5e-1}.get(method, 5e-2)
    values.update(overrides)
    return FinetuneConfig(**values)


def _greedy(model: Any, tokenizer: Any, prompt: str = "What is 2 plus 2?") -> list[int]:
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    model.eval()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    return [int(t) for t in out[0, ids["input_ids"].shape[1] :]]


def _base(tiny_model: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(str(tiny_model))


def _snapshot(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", ["lora", "qlora", "prefix", "adapter", "full"])
def test_each_method_trains_saves_and_changes_generation(method: str, tiny_model: Path, tmp_path: Path) -> None:
    if method == "qlora":
        ok, why = qlora_available()
        if not ok:
            pytest.skip(why)
    import torch

    config = make_config(method)
    reporter = MemoryReporter()
    out = tmp_path / "run" / "artifact"

    result = train(config, EXAMPLES, tiny_model, out, reporter)

    assert result.stopped == "completed"
    assert result.steps == 3 and result.total_steps == 3
    assert [p[0] for p in reporter.progress_calls if p[4] == "training"][-3:] == [1, 2, 3]
    assert any("train_loss" in values for _, _, values in reporter.metric_points)
    assert 0 < result.trainable_params <= result.total_params
    run = read_run_file(out)
    assert run is not None and run["method"] == method
    assert run["dataset"] == {"name": "arithmetic", "version": 3, "hash": "ab12cd34ef"}

    base, tokenizer = _base(tiny_model)
    before = _greedy(base, tokenizer)
    base_weights = _snapshot(base)
    if method == "full":
        from transformers import AutoModelForCausalLM

        assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
        tuned = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
        changed = [n for n, p in tuned.named_parameters() if not torch.equal(p, base_weights[n])]
        assert len(changed) == len(base_weights)  # every weight trained
    else:
        from peft import PeftModel

        assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
        tuned = PeftModel.from_pretrained(base, str(out))
        trained = [(n, p) for n, p in tuned.named_parameters() if any(k in n for k in ("lora_", "ia3_", "prompt"))]
        assert trained, "the adapter has trainable weights"
        if method == "adapter":  # IA3 vectors start at exactly 1.0
            assert any(not torch.all(p == 1.0) for _, p in trained)
        elif method in ("lora", "qlora"):  # LoRA B starts at zero; training moved it
            assert any(bool(p.abs().sum() > 0) for n, p in trained if "lora_B" in n)
        embeddings = tuned.get_base_model().get_input_embeddings().weight
        assert torch.equal(embeddings, base_weights["model.embed_tokens.weight"])  # the base stayed frozen
    after = _greedy(tuned, tokenizer)
    assert after != before, f"{method}: generation unchanged after training"


def test_prompt_tokens_are_masked_from_the_loss(tiny_model: Path) -> None:
    """The labels the trainer sees cover exactly the assistant reply and its end-of-turn token."""
    from studio.training.methods import pick_device
    from studio.training.train import _build_trainer

    config = make_config("lora")
    example = EXAMPLES[4]
    trainer, _times = _build_trainer(
        config, [_row(example)], [], tiny_model, Path("/tmp/unused-checkpoints"), pick_device(), []
    )
    tokenizer = trainer.processing_class
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    learned = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    masked = [i for i, label in zip(ids, labels, strict=True) if label == -100]

    assert tokenizer.decode(learned).strip() == "2 plus 2 is 4.<|im_end|>"
    assert "What is 2 plus 2?" in tokenizer.decode(masked)
    assert tokenizer.decode(masked).endswith("<|im_start|>assistant\n")
    assert labels.index(next(label for label in labels if label != -100)) == len(masked)  # one contiguous prompt


def _row(example: dict[str, Any]) -> dict[str, Any]:
    from studio.training.data import to_prompt_completion

    return to_prompt_completion(example)


def test_cancel_saves_a_checkpoint_and_resume_continues_the_step_count(tiny_model: Path, tmp_path: Path) -> None:
    config = make_config("lora", max_steps=4)
    out = tmp_path / "run" / "adapter"
    cancelling = MemoryReporter(stop_after_step=1)

    stopped = train(config, EXAMPLES, tiny_model, out, cancelling)

    assert stopped.stopped == "cancelled" and stopped.steps == 1
    assert stopped.artifact_path is None and not (out / RUN_FILE).exists()
    assert cancelling.checkpoints == [tmp_path / "run" / "checkpoints" / "checkpoint-1"]
    assert (cancelling.checkpoints[0] / "adapter_model.safetensors").is_file()
    assert (cancelling.checkpoints[0] / "optimizer.pt").is_file()

    resumed_reporter = MemoryReporter()
    resumed = train(config, EXAMPLES, tiny_model, out, resumed_reporter, resume_from=cancelling.checkpoints[0])

    assert resumed.stopped == "completed" and resumed.steps == 4
    steps = [p[0] for p in resumed_reporter.progress_calls if p[4] == "training"]
    assert steps[0] == 1 and steps[1:] == [2, 3, 4]  # starts where the cancelled run stopped
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / RUN_FILE).read_text())["result"]["steps"] == 4


def test_early_stopping_ends_the_run_before_max_steps(tiny_model: Path, tmp_path: Path) -> None:
    # An improvement must exceed 10 nats: impossible, so after the first evaluation every one counts as bad.
    config = make_config(
        "lora",
        max_steps=12,
        validation_split=0.25,
        eval_every_steps=1,
        early_stopping_patience=2,
        early_stopping_threshold=10.0,
    )
    reporter = MemoryReporter()

    result = train(config, EXAMPLES, tiny_model, tmp_path / "adapter", reporter)

    assert result.stopped == "early_stopping"
    assert result.steps == 3  # eval 1 sets the best, evals 2 and 3 do not improve on it
    assert sum("eval_loss" in values for _, _, values in reporter.metric_points) == 3
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert any("early stopping" in line for line in reporter.lines)


def test_estimate_duration_measures_real_steps(tiny_model: Path) -> None:
    from studio.training.estimate import estimate_duration

    config = make_config("lora", max_steps=None, epochs=2, batch_size=2)

    estimate = estimate_duration(config, EXAMPLES, tiny_model)

    assert estimate.total_steps == 12  # 12 examples / batch 2 x 2 epochs
    assert estimate.measured_steps == 2 and estimate.seconds_per_step > 0
    assert estimate.total_seconds >= estimate.total_steps * estimate.seconds_per_step
    assert "12 steps" in estimate.summary()


def test_estimate_has_measured_parts_and_a_range_that_holds_the_real_run(tiny_model: Path, tmp_path: Path) -> None:
    """Issue 15, point 13: "about 14 s" for a job that trained for 40 s -- the estimate counted the steps and left
    out model loading, tokenising, the first step's one-off costs, evaluation and checkpoints. Every part is now
    measured, the range is shown, and a real run of the same config lands in it."""
    from studio.training.estimate import estimate_duration
    from studio.training.train import format_duration

    config = make_config(
        "lora", max_steps=6, batch_size=2, validation_split=0.25, eval_every_steps=2, checkpoint_every_steps=3
    )

    estimate = estimate_duration(config, EXAMPLES, tiny_model)

    parts = {p.name: p for p in estimate.parts}
    assert list(parts) == ["load model", "tokenise", "first step", "train steps", "evaluation", "checkpoints"]
    for part in parts.values():
        assert part.measured and part.seconds > 0 and part.low < part.seconds < part.high, part
    assert "3 passes x 2 batches" in parts["evaluation"].detail  # evals at steps 2, 4 and 6 over 3 eval rows
    assert "2 checkpoints and the final save" in parts["checkpoints"].detail  # steps 3 and 6, then the artifact
    assert estimate.total_seconds == pytest.approx(sum(p.seconds for p in parts.values()))
    assert estimate.low_seconds < estimate.total_seconds < estimate.high_seconds
    shown = estimate.summary()
    assert f"({format_duration(estimate.low_seconds)} – {format_duration(estimate.high_seconds)})" in shown, shown
    assert len(estimate.breakdown()) == 6 and all(" – " in line for line in estimate.breakdown())

    result = train(config, EXAMPLES, tiny_model, tmp_path / "adapter", MemoryReporter())

    # one run on a shared 2-core machine: a margin of half the range's ends either way, not a factor of three
    assert estimate.low_seconds / 1.5 <= result.seconds <= estimate.high_seconds * 1.5, (
        f"real run {result.seconds:.2f} s; estimate {estimate.summary()}: " + "; ".join(estimate.breakdown())
    )


def test_packing_and_gradient_checkpointing_train(tiny_model: Path, tmp_path: Path) -> None:
    config = make_config("lora", packing=True, gradient_checkpointing=True, max_length=128, max_steps=2)

    result = train(config, EXAMPLES, tiny_model, tmp_path / "adapter", MemoryReporter())

    assert result.stopped == "completed" and result.steps == 2
    assert result.train_loss is not None and result.train_loss > 0


def test_launched_worker_trains_and_relays_its_events(tiny_model: Path, tmp_path: Path) -> None:
    """The process ``accelerate launch`` starts on each GPU, run here once on the CPU without accelerate."""
    import sys

    from studio.training.launch import LaunchRequest, run_launched

    request = LaunchRequest(launch_dir=tmp_path / "launch", model_path=tiny_model, output_dir=tmp_path / "adapter")
    path = request.write(make_config("lora", max_steps=2), EXAMPLES)
    reporter = MemoryReporter()

    result = run_launched(request, [sys.executable, "-m", "studio.training.launch", str(path)], reporter)

    assert result["stopped"] == "completed" and result["steps"] == 2
    assert [p[0] for p in reporter.progress_calls if p[4] == "training"][-2:] == [1, 2]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
