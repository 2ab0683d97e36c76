"""Side-by-side streaming on real models: the bundled model against itself with a LoRA adapter (one generator,
per-side figures, each side exactly its own weights), and two different models streaming at the same time."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.compare.battles import NamedSession, named_turn
from studio.compare.stream import ContenderSpec, compare_once, start_sides, stream_sides
from studio.context import AppContext
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.settings import BUNDLED_MODEL_ID

pytestmark = pytest.mark.slow

FRANCE = "What is the capital of France?"
GREEDY = make_sampling_params(temperature=0, max_tokens=12)


def test_base_and_adapter_stream_side_by_side(private_ctx: AppContext, lora_adapters: tuple[Path, Path]) -> None:
    ctx = private_ctx
    session = NamedSession()
    snapshots = [
        views for views, _ in named_turn(ctx.engines, session, ["default", "default + lora-a"], FRANCE, GREEDY)
    ]
    final = snapshots[-1]
    assert final[0].text.startswith("The capital of France is Paris")
    assert final[1].text and final[1].text != final[0].text  # the adapter really changes the answer
    for side in final:
        assert not side.running and side.error is None
        assert side.stats is not None and side.stats["completion_tokens"] > 0
        assert side.stats["ttft_s"] > 0 and side.stats["tokens_per_s"] > 0
        assert "TTFT" in side.stats_text and "tok/s" in side.stats_text
    # one generator carried both sides' progress: each side's text grew over several snapshots
    for i in range(2):
        partial = {s[i].text for s in snapshots if s[i].running and s[i].text}
        assert len(partial) >= 2, f"side {i} did not stream"
    # the engine's active adapter is unchanged (the Playground keeps its own), and the adapter answers the same alone
    engine = ctx.engines.engine("default")
    assert engine.active_adapter is None  # type: ignore[attr-defined]
    alone = ctx.engines.start_chat("default", [ChatMessage("user", FRANCE)], GREEDY, adapter="lora-a").wait()
    assert alone.text == final[1].text

    # the REST contract's core: results in the order given
    first, second = compare_once(
        ctx.engines,
        [ContenderSpec("default", "lora-a"), ContenderSpec("default")],
        [ChatMessage("user", FRANCE)],
        GREEDY,
    )
    assert first.text == final[1].text and second.text == final[0].text


def _token_spans(handles: list) -> list[tuple[float, float]]:
    spans = []
    for h in handles:
        assert not isinstance(h, Exception)
        times = [t.time for t in h.result.tokens]
        spans.append((times[0], times[-1]))
    return spans


def test_base_and_adapter_generate_at_the_same_time(private_ctx: AppContext, lora_adapters: tuple[Path, Path]) -> None:
    """Two sides on one transformers model (its base and an adapter on it) decode concurrently: the engine
    interleaves their decode steps, so each side's tokens arrive while the other side is still generating, and
    each side still answers exactly what it answers alone (its own adapter on every step)."""
    ctx = private_ctx
    specs = [ContenderSpec("default"), ContenderSpec("default", "lora-a")]
    params = make_sampling_params(temperature=0, max_tokens=40, stop=[])
    story = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
    handles = start_sides(ctx.engines, specs, [story] * 2, params)
    last = list(stream_sides(handles))[-1]
    assert all(v.error is None and v.stats for v in last)
    spans = _token_spans(handles)
    assert all(len(h.result.tokens) >= 20 for h in handles if not isinstance(h, Exception))
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], f"the sides ran one after the other: {spans}"
    for spec, view in zip(specs, last, strict=True):
        alone = ctx.engines.start_chat("default", story, params, adapter=spec.adapter or "base").wait()
        assert alone.text == view.text, spec.label


def test_two_models_stream_at_the_same_time(private_ctx: AppContext, tmp_path: Path) -> None:
    """Sides on different engines generate concurrently: their token time spans overlap."""
    from tests.integration.test_compare_dpo import BUNDLED_DIR, make_tiny_model

    ctx = private_ctx
    # under STUDIO_HOME: a model path outside the home and STUDIO_MODEL_DIRS is refused (issue 14)
    tiny = make_tiny_model(ctx.settings.home / "tiny" / "org--tiny", ctx.settings.home / "models" / BUNDLED_DIR)
    specs = [ContenderSpec(BUNDLED_MODEL_ID), ContenderSpec(str(tiny))]
    # long enough that the tiny model (random weights, never stops early, ~10x faster) is still generating when
    # the bundled model's first token comes: with 24 tokens it could finish first on a quiet machine
    params = make_sampling_params(temperature=0, max_tokens=160, stop=[])
    handles = start_sides(ctx.engines, specs, [[ChatMessage("user", FRANCE)]] * 2, params)
    last = list(stream_sides(handles))[-1]
    assert all(v.error is None and v.stats for v in last)
    spans = _token_spans(handles)
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
