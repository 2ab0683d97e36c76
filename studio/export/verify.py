"""Checking an export before it is called done: the greedy first tokens of the exported model, loaded in the engine
that serves it, against the source's.

The reference is the source model (with its adapter, unmerged, through PEFT) on transformers in float32; the export
runs in its own engine (transformers for a merged model, llama.cpp for a GGUF file). Both answer the same 8 fixed
chat prompts (each engine renders the chat template the export carries) with greedy decoding, 16 new tokens at
most, and the token ids are compared:

- ``prompts_identical``: prompts whose 16 tokens are the same (merged, ONNX and f32 GGUF exports must reach all 8;
  f16 and quantized GGUF files report it);
- ``token_agreement``: tokens equal at the same position, over all positions of the longer answer;
- ``prefix_agreement``: tokens before the first difference, over the reference's tokens (a quantized model that
  drifts once usually differs everywhere after, which this figure shows).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.inference.base import ChatMessage, TokenEvent
from studio.inference.params import SamplingParams

if TYPE_CHECKING:
    from studio.inference.base import Engine

MAX_NEW_TOKENS = 16
#: fixed, short, varied prompts: facts, instructions, code, arithmetic, a list, a rewrite, a definition, small talk
VERIFY_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "Name three primary colors.",
    "Write a Python function that adds two numbers.",
    "What is 12 times 7?",
    "Translate 'good morning' into Spanish.",
    "Explain what a neural network is in one sentence.",
    "Give me a tip for sleeping better.",
)


def greedy_params(max_tokens: int = MAX_NEW_TOKENS) -> SamplingParams:
    """Greedy decoding with every penalty off, so two engines pick the same most likely token."""
    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        repetition_penalty=1.0,
        frequency_penalty=0.0,
        presence_penalty=0.0,
        seed=0,
        stop=[],
    )


def engine_tokens(
    engine: Engine, prompts: Sequence[str] = VERIFY_PROMPTS, max_tokens: int = MAX_NEW_TOKENS
) -> list[list[int]]:
    """The token ids ``engine`` generates greedily for each prompt (a user message; the end-of-turn token is not
    part of the answer)."""
    out = []
    params = greedy_params(max_tokens)
    for prompt in prompts:
        cancel = threading.Event()
        events = engine.stream_chat([ChatMessage("user", prompt)], params, cancel)
        out.append([e.token_id for e in events if isinstance(e, TokenEvent)])
    return out


@dataclass(frozen=True)
class PromptResult:
    """One prompt's answers as token ids, and the matching prefix."""

    prompt: str
    reference: list[int]
    exported: list[int]
    matching_prefix: int


@dataclass(frozen=True)
class Agreement:
    """How closely an export's greedy answers follow the source's (see the module docstring)."""

    engine: str
    reference: str
    prompts: int
    max_new_tokens: int
    prompts_identical: int
    tokens_matching: int
    tokens_total: int
    token_agreement: float
    prefix_agreement: float
    required_identical: bool
    seconds: float = 0.0
    per_prompt: list[PromptResult] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Every prompt's answer is the same, token for token."""
        return self.prompts_identical == self.prompts

    @property
    def passed(self) -> bool:
        """Identical where that is required; otherwise the agreement is only reported."""
        return self.identical or not self.required_identical

    def summary(self) -> str:
        """``8/8 prompts identical, 128/128 tokens (100.0%)``."""
        return (
            f"{self.prompts_identical}/{self.prompts} prompts identical, {self.tokens_matching}/{self.tokens_total} "
            f"tokens at the same position ({100 * self.token_agreement:.1f}%), "
            f"{100 * self.prefix_agreement:.1f}% before the first difference"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with ``identical`` and ``passed``."""
        data = asdict(self)
        data["identical"] = self.identical
        data["passed"] = self.passed
        return data


def compare(
    reference: Sequence[Sequence[int]],
    exported: Sequence[Sequence[int]],
    *,
    engine: str,
    reference_label: str,
    required_identical: bool,
    prompts: Sequence[str] = VERIFY_PROMPTS,
    seconds: float = 0.0,
) -> Agreement:
    """Compare two engines' answers to ``prompts`` (token ids per prompt)."""
    if len(reference) != len(exported) or len(reference) != len(prompts):
        raise ValueError("reference, exported and prompts must have the same length")
    per_prompt = []
    identical = matching = total = prefix_sum = ref_total = 0
    for prompt, ref, got in zip(prompts, reference, exported, strict=True):
        ref, got = list(ref), list(got)
        same = sum(1 for a, b in zip(ref, got, strict=False) if a == b)
        prefix = 0
        for a, b in zip(ref, got, strict=False):
            if a != b:
                break
            prefix += 1
        identical += ref == got
        matching += same
        total += max(len(ref), len(got))
        prefix_sum += prefix
        ref_total += len(ref)
        per_prompt.append(PromptResult(prompt, ref, got, prefix))
    return Agreement(
        engine=engine,
        reference=reference_label,
        prompts=len(prompts),
        max_new_tokens=max((len(r) for r in reference), default=0),
        prompts_identical=identical,
        tokens_matching=matching,
        tokens_total=total,
        token_agreement=matching / total if total else 1.0,
        prefix_agreement=prefix_sum / ref_total if ref_total else 1.0,
        required_identical=required_identical,
        seconds=round(seconds, 2),
        per_prompt=per_prompt,
    )


# --- running the engines --------------------------------------------------------------------------------------


def reference_tokens(
    model_dir: Path, adapter_dir: Path | None, prompts: Sequence[str] = VERIFY_PROMPTS
) -> list[list[int]]:
    """The source's answers: the model of ``model_dir`` on transformers in float32, with ``adapter_dir`` loaded
    through PEFT (not merged) when given."""
    from studio.inference.transformers_backend import TransformersEngine

    engine = TransformersEngine("export-reference", model_dir, dtype="float32", device="cpu")
    try:
        if adapter_dir is not None:
            engine.load_adapter(adapter_dir, name="export-source")
        return engine_tokens(engine, prompts)
    finally:
        engine.unload()


def transformers_tokens(model_dir: Path, prompts: Sequence[str] = VERIFY_PROMPTS) -> list[list[int]]:
    """A merged export's answers on transformers, loaded in float32 (as the reference) from its own folder."""
    from studio.inference.transformers_backend import TransformersEngine

    engine = TransformersEngine("export-check", model_dir, dtype="float32", device="cpu")
    try:
        return engine_tokens(engine, prompts)
    finally:
        engine.unload()


def llamacpp_tokens(gguf: Path, prompts: Sequence[str] = VERIFY_PROMPTS) -> list[list[int]]:
    """A GGUF export's answers on the llamacpp engine (its embedded chat template), as the studio serves it."""
    from studio.inference.llamacpp_backend import LlamaCppEngine

    engine = LlamaCppEngine("export-check", gguf, n_ctx=512, seed=0)
    try:
        return engine_tokens(engine, prompts)
    finally:
        engine.unload()


def onnxruntime_tokens(folder: Path, prompts: Sequence[str] = VERIFY_PROMPTS) -> list[list[int]]:
    """An ONNX export's answers on the onnxruntime engine (its copied tokenizer and chat template)."""
    from studio.inference.onnx_backend import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine("export-check", folder)
    try:
        return engine_tokens(engine, prompts)
    finally:
        engine.unload()


def verify_export(
    reference: Sequence[Sequence[int]],
    engine: str,
    run: Callable[[], list[list[int]]],
    *,
    required_identical: bool,
) -> Agreement:
    """Run the export's engine (``run``) and compare its answers with ``reference`` (the source's)."""
    started = time.perf_counter()
    exported = run()
    return compare(
        reference,
        exported,
        engine=engine,
        reference_label="source on transformers, float32, adapter unmerged",
        required_identical=required_identical,
        seconds=time.perf_counter() - started,
    )
