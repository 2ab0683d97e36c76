"""The bundled SmolLM2-135M-Instruct through the engine manager: real tokens, real timings."""

from __future__ import annotations

import threading
import time

import pytest
from sqlmodel import select

from studio.context import AppContext
from studio.db import RequestLog
from studio.inference.base import ChatMessage, GenerationEnd, GenerationStart, TokenEvent
from studio.inference.params import make_sampling_params

pytestmark = pytest.mark.slow

FRANCE = [ChatMessage("user", "What is the capital of France?")]


def test_bundled_model_is_listed_under_its_hub_name(ctx: AppContext) -> None:
    ids = [e.id for e in ctx.registry.list_models()]
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in ids
    assert ctx.registry.resolve("default").id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_converted_once_to_safetensors(ctx: AppContext) -> None:
    target = ctx.settings.models_dir / "HuggingFaceTB--SmolLM2-135M-Instruct"
    assert (target / "model.safetensors").stat().st_size > 100_000_000
    assert (target / "whetstone-model.json").is_file()
    mtime = (target / "model.safetensors").stat().st_mtime
    from studio.models.convert import prepare_model

    assert prepare_model(ctx.registry.resolve("default"), ctx.settings.models_dir) == target
    assert (target / "model.safetensors").stat().st_mtime == mtime  # not converted again


def test_greedy_answer_names_paris(ctx: AppContext) -> None:
    result = ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=32))
    assert "Paris" in result.text
    assert result.stats.finish_reason == "stop"
    assert result.stats.prompt_tokens > 10
    assert result.stats.completion_tokens == len(result.tokens) > 0


def test_stream_concatenation_equals_non_streamed_text(ctx: AppContext) -> None:
    params = make_sampling_params(temperature=0.9, seed=1234, max_tokens=40)
    messages = [ChatMessage("user", "Write two sentences about autumn.")]
    whole = ctx.engines.chat("default", messages, params).text

    handle = ctx.engines.start_chat("default", messages, params)
    pieces: list[str] = []
    kinds: list[type] = []
    for item in handle:
        kinds.append(type(item))
        if isinstance(item, TokenEvent):
            pieces.append(item.text)
        elif isinstance(item, GenerationEnd):
            pieces.append(item.tail_text)
    assert kinds[0] is GenerationStart and kinds[-1] is GenerationEnd
    assert sum(k is TokenEvent for k in kinds) > 5  # it really streamed token by token
    assert "".join(pieces) == whole
    assert len(whole) > 20


def test_same_seed_same_reply_other_seed_differs(ctx: AppContext) -> None:
    messages = [ChatMessage("user", "Invent a name for a cat.")]
    a = ctx.engines.chat("default", messages, make_sampling_params(temperature=1.2, seed=7, max_tokens=24)).text
    b = ctx.engines.chat("default", messages, make_sampling_params(temperature=1.2, seed=7, max_tokens=24)).text
    others = {
        ctx.engines.chat("default", messages, make_sampling_params(temperature=1.2, seed=s, max_tokens=24)).text
        for s in (8, 9, 10)
    }
    assert a == b
    assert others - {a}, "different seeds should give at least one different reply"


def test_logprobs_are_nonpositive_and_alternatives_sorted(ctx: AppContext) -> None:
    params = make_sampling_params(temperature=0, max_tokens=12, logprobs=True, top_logprobs=5)
    result = ctx.engines.chat("default", FRANCE, params)
    assert result.tokens
    for tok in result.tokens:
        assert tok.logprob <= 0
        values = [t.logprob for t in tok.top_logprobs]
        assert len(values) == 5
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        # greedy: the chosen token is the most likely one
        assert tok.top_logprobs[0].token_id == tok.token_id
        assert tok.logprob == pytest.approx(values[0])


def test_stop_sequence_cuts_the_reply(ctx: AppContext) -> None:
    full = ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=32)).text
    assert " is " in full
    cut = ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=32, stop=[" is "]))
    assert cut.text == full.split(" is ")[0]
    assert cut.stats.finish_reason == "stop"


def test_max_tokens_ends_with_length(ctx: AppContext) -> None:
    result = ctx.engines.chat(
        "default",
        [ChatMessage("user", "Tell me a long story about a dragon.")],
        make_sampling_params(temperature=0, max_tokens=5),
    )
    assert result.stats.completion_tokens == 5
    assert result.stats.finish_reason == "length"


def test_multi_turn_uses_the_chat_template(ctx: AppContext) -> None:
    engine = ctx.engines.load("default")
    prompt = engine.render_chat(  # type: ignore[attr-defined]
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Hello!"),
            ChatMessage("user", "What is 2+2?"),
        ]
    )
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "<|im_start|>assistant\nHello!<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_cancel_stops_generation_early(ctx: AppContext) -> None:
    params = make_sampling_params(temperature=0.8, seed=3, max_tokens=400, stop=[])
    handle = ctx.engines.start_chat("default", [ChatMessage("user", "Write a very long essay about rivers.")], params)
    seen = 0
    for item in handle:
        if isinstance(item, TokenEvent):
            seen += 1
            if seen == 3:
                handle.cancel()
    assert handle.result.stats.finish_reason == "cancelled"
    assert handle.result.stats.completion_tokens < 20


def test_concurrent_requests_all_complete_with_the_same_answer(ctx: AppContext) -> None:
    params = make_sampling_params(temperature=0, max_tokens=8)
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(ctx.engines.chat("default", FRANCE, params).text)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1  # greedy: interleaved decode steps do not mix their KV caches


def test_each_generation_is_logged_in_the_database(ctx: AppContext) -> None:
    result = ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=6))
    time.sleep(0.2)  # the row is written by the worker thread right after the last token
    with ctx.db.session() as s:
        rows = s.exec(select(RequestLog).order_by(RequestLog.id.desc())).all()  # type: ignore[union-attr]
    assert rows
    row = rows[0]
    assert row.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert row.completion_tokens == result.stats.completion_tokens
    assert row.prompt_tokens == result.stats.prompt_tokens
    assert row.tokens_per_s is None or row.tokens_per_s > 0


def test_stats_come_from_token_timestamps(ctx: AppContext) -> None:
    result = ctx.engines.chat(
        "default", [ChatMessage("user", "Count from one to ten.")], make_sampling_params(temperature=0, max_tokens=20)
    )
    s = result.stats
    assert s.ttft_s is not None and 0 < s.ttft_s < 30
    assert s.tokens_per_s is not None and s.tokens_per_s > 0
    span = result.tokens[-1].time - result.tokens[0].time
    assert s.tokens_per_s == pytest.approx((len(result.tokens) - 1) / span)


def test_n_parallel_caps_the_generations_one_model_decodes_at_once(private_ctx: AppContext) -> None:
    """An alias's n_parallel bounds how many generations the transformers engine interleaves: with 1 the second
    request waits for the first to end (their token spans do not overlap), and a request cancelled while it
    waits for a slot ends at once, cancelled, with no token."""
    import yaml

    ctx = private_ctx
    alias = {
        "alias": "smol:one-at-a-time",
        "repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "context_params": {"engine": "transformers", "n_parallel": 1},
    }
    folder = ctx.settings.home / "aliases"
    folder.mkdir(exist_ok=True)
    (folder / "smol--one-at-a-time.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    engine = ctx.engines.load("smol:one-at-a-time")
    assert engine.max_parallel == 1 and engine.info.extra["max_parallel"] == "1"  # type: ignore[attr-defined]

    params = make_sampling_params(temperature=0, max_tokens=16, stop=[])
    story = [ChatMessage("user", "Write a long story about a dragon.")]
    first = ctx.engines.start_chat("smol:one-at-a-time", story, params)
    second = ctx.engines.start_chat("smol:one-at-a-time", story, params)
    third = ctx.engines.start_chat("smol:one-at-a-time", story, params)
    time.sleep(0.3)
    third.cancel()
    assert third.wait().stats.finish_reason == "cancelled" and not third.result.tokens
    a, b = first.wait(), second.wait()
    spans = sorted((r.tokens[0].time, r.tokens[-1].time) for r in (a, b))
    assert spans[0][1] < spans[1][0], f"n_parallel=1 but two generations overlapped: {spans}"
    assert a.text == b.text
