"""CUDA-only paths (marked `gpu`, skipped without CUDA): the transformers engine on the GPU, bitsandbytes 4-bit
there, `auto` picking vLLM when CUDA and vLLM are both present, and tiny LoRA runs under DeepSpeed ZeRO-2 and FSDP
through ``accelerate launch`` on every visible GPU (one is enough)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studio.context import AppContext
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.inference.routing import choose_engine, engine_installed

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

FRANCE = [ChatMessage("user", "What is the capital of France?")]


def test_transformers_on_cuda(private_ctx: AppContext) -> None:
    engine = private_ctx.engines.load("default")
    assert engine.info.device.startswith("cuda")
    result = private_ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=12))
    assert "Paris" in result.text


def test_nf4_on_cuda(private_ctx: AppContext) -> None:
    engine = private_ctx.engines.load("default", quantization="nf4")
    assert engine.info.extra["quantization"] == "nf4" and engine.info.device.startswith("cuda")
    assert private_ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=8)).text


def test_auto_picks_vllm_on_cuda(private_ctx: AppContext) -> None:
    if not engine_installed("vllm"):
        pytest.skip("vllm is not installed for CUDA (requirements-vllm-cuda.txt + STUDIO_VLLM_PYTHON)")
    entry = private_ctx.engines.resolve("default").entry
    choice = choose_engine(entry, None)
    assert choice.engine == "vllm" and "CUDA" in choice.reason


def test_nvml_reads_the_gpu_and_this_process_memory() -> None:
    """The Resources charts' NVML path: every GPU has a name, memory total and utilisation, and allocating 1 GiB
    on the GPU shows in its used memory; the per-job reading finds this process (0 only inside a PID namespace,
    where NVML reports host PIDs)."""
    import os

    import torch

    from studio.monitoring.system import Nvml

    nvml = Nvml()
    try:
        assert nvml.status.available, nvml.status.note
        before = nvml.sample()
        assert before and all(g.memory_total_bytes and g.utilization_percent is not None for g in before)
        block = torch.empty(1 << 30, dtype=torch.uint8, device="cuda:0")
        torch.cuda.synchronize()
        after = nvml.sample()
        grown = (after[0].memory_used_bytes or 0) - (before[0].memory_used_bytes or 0)
        assert grown >= (1 << 30) * 0.9, f"GPU 0 used memory grew by {grown} bytes after a 1 GiB allocation"
        mine = nvml.process_memory([os.getpid()])
        assert mine is not None and (mine == 0 or mine >= 1 << 30)
        del block
    finally:
        nvml.close()


BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"
ARITHMETIC: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    }
    for a in range(1, 5)
    for b in range(1, 5)
]


@pytest.fixture(scope="module")
def tiny_llama(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the bundled tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama-cuda")
    LlamaForCausalLM(config).save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def _sharded_lora_run(tiny: Path, tmp_path: Path, strategy: str) -> tuple[Any, Any]:
    """A 4-step LoRA run with ``strategy`` on every visible GPU, as a fine-tuning job runs it."""
    from studio.jobs.reporter import MemoryReporter
    from studio.training.config import FinetuneConfig
    from studio.training.launch import train_on_all_devices

    config = FinetuneConfig(
        name=f"gpu-{strategy}", dataset="arith", base_model=str(tiny), method="lora", strategy=strategy,
        max_steps=4, batch_size=2, max_length=64, validation_split=0.0, checkpoint_every_steps=100,
        warmup_ratio=0.0, lr_scheduler="constant", learning_rate=5e-2, logging_steps=1, seed=0,
    )  # fmt: skip
    reporter = MemoryReporter()
    run = tmp_path / "run"
    result = train_on_all_devices(
        config, ARITHMETIC, tiny, run / "adapter", reporter, checkpoint_dir=run / "checkpoints"
    )
    return result, reporter


def _check_sharded_run(result: Any, reporter: Any, strategy: str) -> None:
    from safetensors.torch import load_file

    assert any(line.startswith(f"{strategy} over ") for line in reporter.lines), reporter.lines
    assert result.stopped == "completed" and result.steps == 4
    losses = [values["train_loss"] for _, _, values in reporter.metric_points if "train_loss" in values]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    # the artifact is an ordinary adapter (gathered from the shards), and training moved it: LoRA's B starts at 0
    tensors = load_file(str(result.artifact_path / "adapter_model.safetensors"))
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and any(float(t.float().abs().sum()) > 0 for t in lora_b)


def test_deepspeed_zero2_trains_a_lora_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed", reason="strategy deepspeed_zero2 needs `pip install deepspeed` on this machine")
    result, reporter = _sharded_lora_run(tiny_llama, tmp_path, "deepspeed_zero2")
    _check_sharded_run(result, reporter, "deepspeed_zero2")


def test_fsdp_trains_a_lora_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    result, reporter = _sharded_lora_run(tiny_llama, tmp_path, "fsdp")
    _check_sharded_run(result, reporter, "fsdp")
