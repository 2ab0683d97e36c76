"""CUDA-only paths (marked `gpu`, skipped without CUDA): the transformers engine on the GPU, bitsandbytes 4-bit
there, and `auto` picking vLLM when CUDA and vLLM are both present."""

from __future__ import annotations

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
