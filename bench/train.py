"""Training benchmark (`make bench-train`): one LoRA config trained through the studio's job body
(``studio.training.train.train`` with its reporter callback) and through a plain TRL script, in the same process.

Both train the bundled SmolLM2-135M-Instruct on the studio's chat dataset (configs/datasets/whetstone-assistant.jsonl)
with LoRA r=8 on q/v, batch 4, max_length 256, float32 on the CPU (bf16 on CUDA), no evaluation, and the same
prompt/completion rows (prompt masked from the loss). The plain script spells its SFTConfig/LoraConfig out by hand
instead of going through studio.training.methods, so a mistake in the mapping would show up as a difference.

Reports seconds/step (median of the timed steps, the first step of each run excluded) for both and the ratio
studio/plain (target <= 1.05). Runs alternate (plain, studio, plain, studio, ...) so a noisy neighbour hits both.
Results: bench/results/train.json and bench/results/train.md.

    python bench/train.py [--steps 8] [--repeats 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.jobs.reporter import MemoryReporter  # noqa: E402
from studio.models.convert import prepare_model  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.settings import Settings  # noqa: E402
from studio.training.config import FinetuneConfig  # noqa: E402
from studio.training.data import split_examples  # noqa: E402

DATASET = ROOT / "configs" / "datasets" / "whetstone-assistant.jsonl"
RESULTS = ROOT / "bench" / "results"


def bench_config(steps: int) -> FinetuneConfig:
    return FinetuneConfig(
        name="bench-lora",
        dataset="whetstone-assistant",
        method="lora",
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        max_steps=steps,
        batch_size=4,
        max_length=256,
        learning_rate=2e-4,
        lr_scheduler="linear",
        warmup_ratio=0.0,
        validation_split=0.0,
        checkpoint_every_steps=1_000_000,
        logging_steps=1,
        seed=42,
    )


def run_studio(config: FinetuneConfig, examples: list[dict[str, Any]], model_path: Path) -> list[float]:
    """The studio's job body, its reporter callback included; the same StepTimer as the plain run measures it."""
    from studio.training.callbacks import StepTimer
    from studio.training.train import train

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-studio-") as tmp:
        result = train(config, examples, model_path, Path(tmp) / "adapter", MemoryReporter(), callbacks=[timer])
    assert result.steps == config.max_steps, result
    return timer.times


def run_plain(config: FinetuneConfig, examples: list[dict[str, Any]], model_path: Path) -> list[float]:
    """What a user would write with TRL directly."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from studio.training.callbacks import StepTimer

    train_rows, _ = split_examples(examples, 0.0, config.seed)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=config.max_steps,
            per_device_train_batch_size=4,
            learning_rate=2e-4,
            lr_scheduler_type="linear",
            max_length=256,
            gradient_checkpointing=False,
            completion_only_loss=True,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            seed=config.seed,
            bf16=bf16,
            use_cpu=not cuda,
            report_to=[],
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05),
            callbacks=[timer],
        )
        trainer.train()
    return timer.times


def per_step(times: list[float]) -> float:
    timed = times[1:] or times
    return statistics.median(timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    opts = parser.parse_args()

    import torch

    torch.set_num_threads(opts.threads)
    settings = Settings()
    settings.ensure_dirs()
    model_path = prepare_model(ModelRegistry(settings).resolve("default"), settings.models_dir)
    examples = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = bench_config(opts.steps)

    runs: dict[str, list[float]] = {"plain": [], "studio": []}
    walls: dict[str, list[float]] = {"plain": [], "studio": []}
    for i in range(opts.repeats):
        for name, fn in (("plain", run_plain), ("studio", run_studio)):
            started = time.perf_counter()
            times = fn(config, examples, model_path)
            walls[name].append(time.perf_counter() - started)
            runs[name].append(per_step(times))
            print(f"run {i + 1} {name}: {runs[name][-1]:.3f} s/step over {len(times) - 1} timed steps", flush=True)

    plain = statistics.median(runs["plain"])
    studio = statistics.median(runs["studio"])
    result = {
        "benchmark": "train",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": opts.threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
        "config": {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "method": "lora r=8 alpha=16 (q_proj, v_proj)",
            "batch_size": 4,
            "max_length": 256,
            "steps": opts.steps,
            "repeats": opts.repeats,
            "examples": len(examples),
        },
        "seconds_per_step": {"plain_trl": plain, "studio": studio},
        "runs": runs,
        "wall_seconds": walls,
        "ratio_studio_over_plain": studio / plain,
        "target_ratio": 1.05,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = [
        "# Training benchmark",
        "",
        f"{result['date']}, {result['machine']['device']}, {opts.threads} torch threads, {os.cpu_count()} CPUs. "
        f"LoRA r=8 on SmolLM2-135M-Instruct, batch 4, max_length 256, {opts.steps} steps x {opts.repeats} run(s) each "
        "(median step time, first step excluded).",
        "",
        "| path | s/step | wall s (incl. load) |",
        "|---|---|---|",
        f"| plain TRL script | {plain:.3f} | {statistics.median(walls['plain']):.1f} |",
        f"| studio job body | {studio:.3f} | {statistics.median(walls['studio']):.1f} |",
        "",
        f"Ratio studio / plain: **{studio / plain:.3f}** (target <= 1.05).",
        "",
    ]
    (RESULTS / "train.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
