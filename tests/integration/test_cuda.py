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
