"""Continuous batching in the transformers engine: concurrent generations on one model share forward passes, and
each gets exactly what it gets alone (greedy and seeded, base and two LoRA adapters and a prefix-tuning adapter
at once, own stop strings and max_tokens), joins a running batch, leaves it when cancelled, and waits its turn
beyond ``n_parallel``. Most run on a tiny random Llama made in seconds (bf16, the CPU default here); one on the
bundled model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from studio.inference.base import GenerationEnd, TokenEvent
from studio.inference.params import SamplingParams, make_sampling_params
from studio.inference.transformers_backend import TransformersEngine
from tests.conftest import BUNDLED_DIR_NAME, make_lora_adapter, make_prompt_adapter
from tests.integration.test_compare_dpo import make_tiny_model


@dataclass
class Reply:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[tuple[int, ...]] = field(default_factory=list)
    text: str = ""
    finish: str = ""

    def key(self) -> tuple[object, ...]:
        return (self.tokens, self.logprobs, self.tops, self.text, self.finish)


@dataclass(frozen=True)
class Ask:
    prompt: str
    params: SamplingParams
    adapter: str = "base"


def run(engine: TransformersEngine, ask: Ask, cancel: threading.Event | None = None, cancel_after: int = 0) -> Reply:
    """One generation read to its end; ``cancel_after`` tokens in, ``cancel`` is set."""
    cancel = cancel or threading.Event()
    reply = Reply()
    for item in engine.stream_completion(ask.prompt, ask.params, cancel, adapter=ask.adapter):
        if isinstance(item, TokenEvent):
            reply.tokens.append(item.token_id)
            reply.logprobs.append(item.logprob)
            reply.tops.append(tuple(t.token_id for t in item.top_logprobs))
            reply.text += item.text
            if cancel_after and len(reply.tokens) == cancel_after:
                cancel.set()
        elif isinstance(item, GenerationEnd):
            reply.text += item.tail_text
            reply.finish = item.finish_reason
    return reply


def run_together(engine: TransformersEngine, asks: list[Ask]) -> list[Reply]:
    """All of ``asks`` at once, each from its own thread (as the manager runs them)."""
    replies: list[Reply | None] = [None] * len(asks)
    errors: list[BaseException] = []
    start = threading.Barrier(len(asks))

    def one(i: int) -> None:
        try:
            start.wait(30)
            replies[i] = run(engine, asks[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all(r is not None for r in replies)
    return [r for r in replies if r is not None]


def greedy(max_tokens: int = 12, **kw: object) -> SamplingParams:
    return make_sampling_params(**{"temperature": 0, "max_tokens": max_tokens, "stop": [], **kw})


def seeded(seed: int, max_tokens: int = 12, **kw: object) -> SamplingParams:
    return make_sampling_params(
        **{"temperature": 0.9, "top_p": 0.95, "seed": seed, "max_tokens": max_tokens, "stop": [], **kw}
    )


@pytest.fixture(scope="module")
def tiny_dir(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batched")
    tiny = make_tiny_model(folder / "tiny", studio_home / "models" / BUNDLED_DIR_NAME)
    make_lora_adapter(tiny, folder / "lora-a", seed=1)
    make_lora_adapter(tiny, folder / "lora-b", seed=2)
    make_prompt_adapter(tiny, folder / "prefix-a", "prefix")
    return tiny


def tiny_engine(tiny_dir: Path, max_parallel: int = 8, adapters: bool = True) -> TransformersEngine:
    engine = TransformersEngine("tiny", tiny_dir, dtype="bfloat16", threads=2, max_parallel=max_parallel)
    if adapters:
        for name in ("lora-a", "lora-b", "prefix-a"):
            engine.load_adapter(tiny_dir.parent / name, name)
        engine.set_active_adapter(None)
    return engine


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Iterator[TransformersEngine]:
    eng = tiny_engine(tiny_dir)
    assert eng.info.extra["batching"].startswith(("on", "off (this machine's kernels", "off (this CPU has no AMX"))
    yield eng
    eng.unload()


def batching_on(engine: TransformersEngine) -> bool:
    """Batched decoding is on for this engine: the load-time check found this machine's kernels keep a row's bits
    in a batch. Off (an AMD EPYC here), every request decodes alone, answers exactly as alone, and the assertions
    about shared forward passes do not apply."""
    return bool(engine.info.extra["batching"] == "on")


def need_batching(engine: TransformersEngine) -> None:
    if not batching_on(engine):
        pytest.skip(f"batched decoding is {engine.info.extra['batching']}")


PROMPTS = ["Hello there", "The capital of France is a city with a long history and", "1 2 3", "Once upon"]


def test_batched_replies_equal_solo_replies(engine: TransformersEngine) -> None:
    """Greedy and seeded requests on the base, two LoRA adapters and a prefix-tuning adapter, with their own
    max_tokens, stop strings and logprob requests, decoded in one batch: each equals its solo run token for token
    (and logprob for logprob)."""
    adapters = ["base", "lora-a", "lora-b", "base", "lora-a", "lora-b", "prefix-a", "prefix-a"]
    asks = [
        Ask(PROMPTS[i % 4], make_sampling_params(
            temperature=0.9 if i % 2 else 0.0, top_p=0.95, seed=i, max_tokens=6 + 2 * i, top_logprobs=i % 3, stop=[]
        ), adapter)
        for i, adapter in enumerate(adapters)
    ]  # fmt: skip
    # a stop string that really fires: a piece of what the request answers without one
    plain = run(engine, Ask(PROMPTS[1], seeded(7, max_tokens=16), "lora-b"))
    stop = plain.text[len(plain.text) // 2 :][:3]
    asks.append(Ask(PROMPTS[1], seeded(7, max_tokens=16, stop=[stop]), "lora-b"))
    asks.append(Ask(PROMPTS[0], greedy(3)))

    solo = [run(engine, ask) for ask in asks]
    assert solo[-2].finish == "stop" and stop not in solo[-2].text
    assert solo[-1].finish == "length" and len(solo[-1].tokens) == 3
    assert len({tuple(r.tokens) for r in solo}) > 5  # the adapters and seeds really answer differently
    before = engine.batch_counters
    together = run_together(engine, asks)
    after = engine.batch_counters
    for ask, alone, batched in zip(asks, solo, together, strict=True):
        assert batched.key() == alone.key(), ask
    assert after.peak_batch >= 4 or not batching_on(engine)  # base and LoRA rows shared forward passes
    assert after.prefills - before.prefills == len(asks)


def test_concurrent_requests_take_about_max_tokens_steps_not_n_times(engine: TransformersEngine) -> None:
    """Four requests of 24 tokens at once take ~24 batched decode passes; taking turns would need 4 x 23."""
    need_batching(engine)
    asks = [Ask(PROMPTS[i], greedy(24)) for i in range(4)]
    before = engine.batch_counters.decode_passes
    replies = run_together(engine, asks)
    passes = engine.batch_counters.decode_passes - before
    assert all(len(r.tokens) == 24 for r in replies)
    assert passes <= 24 + 4, f"{passes} decode passes for 4 concurrent requests of 24 tokens"


def test_cancelled_row_leaves_and_the_others_are_intact(engine: TransformersEngine) -> None:
    asks = [
        Ask(PROMPTS[i], seeded(i, max_tokens=20) if i % 2 else greedy(20), "lora-a" if i else "base") for i in range(3)
    ]
    solo = [run(engine, ask) for ask in asks]
    results: dict[int, Reply] = {}
    start = threading.Barrier(3)

    def one(i: int) -> None:
        start.wait(30)
        results[i] = run(engine, asks[i], cancel_after=4 if i == 1 else 0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results[1].finish == "cancelled" and 4 <= len(results[1].tokens) < 20
    assert results[1].tokens == solo[1].tokens[: len(results[1].tokens)]
    assert results[0].key() == solo[0].key() and results[2].key() == solo[2].key()


def test_a_request_joining_a_running_batch_gets_its_solo_reply(engine: TransformersEngine) -> None:
    long_ask = Ask(PROMPTS[1], greedy(40), "lora-b")
    late_ask = Ask(PROMPTS[3], seeded(5, max_tokens=10), "base")
    solo_long, solo_late = run(engine, long_ask), run(engine, late_ask)
    late: list[Reply] = []
    joiner = threading.Thread(target=lambda: late.append(run(engine, late_ask)))
    reply = Reply()
    cancel = threading.Event()
    before = engine.batch_counters
    for item in engine.stream_completion(long_ask.prompt, long_ask.params, cancel, adapter=long_ask.adapter):
        if isinstance(item, TokenEvent):
            reply.tokens.append(item.token_id)
            if len(reply.tokens) == 8:
                joiner.start()  # joins while the long one is mid-reply
    joiner.join(60)
    assert reply.tokens == solo_long.tokens
    assert late and late[0].key() == solo_late.key()
    after = engine.batch_counters
    assert after.prefills - before.prefills == 2
    need_batching(engine)
    assert after.peak_batch >= 2
    # the two shared steps: fewer passes than their tokens added up
    assert after.decode_passes - before.decode_passes < len(solo_long.tokens) + len(solo_late.tokens) - 2


def test_n_parallel_bounds_the_running_rows_and_a_waiting_request_can_leave(tiny_dir: Path) -> None:
    engine = tiny_engine(tiny_dir, max_parallel=2, adapters=False)
    try:
        asks = [Ask(PROMPTS[i % 4], greedy(12 + i)) for i in range(5)]
        solo = [run(engine, ask) for ask in asks]
        replies = run_together(engine, asks)
        assert [r.key() for r in replies] == [s.key() for s in solo]
        counters = engine.batch_counters
        assert counters.peak_running == 2 and counters.peak_batch == (2 if batching_on(engine) else 1)

        # two running, a third waiting: cancelling it ends it at once with no token, the others go on
        cancel = threading.Event()
        running = [threading.Thread(target=run, args=(engine, Ask(PROMPTS[0], greedy(200)))) for _ in range(2)]
        for t in running:
            t.start()
        stream = engine.stream_completion(PROMPTS[2], greedy(5), cancel)
        next(stream)  # GenerationStart
        cancel.set()
        items = list(stream)
        assert len(items) == 1 and isinstance(items[0], GenerationEnd) and items[0].finish_reason == "cancelled"
        assert any(t.is_alive() for t in running)
        for t in running:
            t.join(120)
        assert engine.batch_counters.peak_running == 2
    finally:
        engine.unload()


def test_more_rows_than_one_pass_holds_decode_in_passes_of_at_most_32(tiny_dir: Path) -> None:
    """CPU bf16 matmuls give a row its solo bits only in batches of up to 32 rows: 36 running requests decode in
    two passes per step, and each still answers as alone."""
    from studio.inference.batching import ROWS_PER_PASS

    engine = tiny_engine(tiny_dir, max_parallel=40, adapters=False)
    try:
        asks = [Ask(PROMPTS[i % 4] + " " * (i // 4), seeded(i, max_tokens=5)) for i in range(36)]
        solo = [run(engine, ask) for ask in asks]
        replies = run_together(engine, asks)
        assert [r.key() for r in replies] == [s.key() for s in solo]
        counters = engine.batch_counters
        assert counters.peak_running > 32
        assert counters.peak_batch == (ROWS_PER_PASS if batching_on(engine) else 1) and ROWS_PER_PASS == 32
    finally:
        engine.unload()


def test_attention_maps_still_work_and_batching_stays_on(engine: TransformersEngine) -> None:
    ask = Ask(PROMPTS[0], greedy(6), "lora-a")
    before = run(engine, ask)
    maps = engine.attention(engine.encode(PROMPTS[1], special=True), adapter="lora-a")
    assert maps.weights.shape[0] == 2  # one map per layer of the tiny model
    assert engine.model.config._attn_implementation == "studio_rows"
    assert run(engine, ask).key() == before.key()


def test_unload_stops_the_scheduler_thread(tiny_dir: Path) -> None:
    engine = tiny_engine(tiny_dir, adapters=False)
    assert run(engine, Ask(PROMPTS[0], greedy(3))).finish == "length"
    thread = engine._scheduler._thread
    assert thread is not None and thread.is_alive()
    engine.unload()
    thread.join(10)
    assert not thread.is_alive()


def test_incremental_detokenizer_matches_a_full_decode(studio_home: Path) -> None:
    from transformers import AutoTokenizer

    from studio.inference.decode import IncrementalText

    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR_NAME))
    text = "Héllo wörld — 你好, naïve café 🙂🚀 x\n\n  tabs\tand <|im_end|> specials"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    inc = IncrementalText(tokenizer)
    for n, token_id in enumerate(ids, start=1):
        assert inc.add(token_id) == tokenizer.decode(ids[:n], skip_special_tokens=True)


@pytest.mark.parametrize(("top_k", "top_p"), [(50, 0.9), (0, 0.9), (0, 0.999), (5, 1.0), (40, 0.5)])
def test_sampling_keeps_the_tokens_transformers_warpers_keep(top_k: int, top_p: float) -> None:
    """top-p on the top-k candidates keeps the tokens (with their relative weights) that transformers' TopK and
    TopP warpers keep on the whole vocabulary (both sum probabilities in another order, so a token right at the
    top-p edge may fall either way)."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from studio.inference.decode import sampling_candidates

    params = make_sampling_params(temperature=0.8, top_k=top_k, top_p=top_p)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(0.8)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randn(1, 5000, generator=gen) * 4
        reference = torch.softmax(warpers(torch.zeros((1, 0), dtype=torch.long), scores.clone()), dim=-1)[0]
        weights, ids = sampling_candidates(torch, scores, params)
        ours = torch.zeros(5000).index_add_(0, ids[0], weights[0])
        ours /= ours.sum()
        # the same tokens, but for at most one whose preceding mass is top_p within float rounding
        differ = (ours > 0) != (reference > 0)
        assert int(differ.sum()) <= 1 and float((ours - reference)[differ].abs().sum()) < 1e-3
        assert torch.allclose(ours, reference, atol=1e-3)


@pytest.mark.slow
def test_bundled_model_batched_equals_solo(studio_home: Path) -> None:
    """The bundled SmolLM2 in bf16 (the CPU default here): six chats, greedy and seeded, in one batch and alone."""
    from studio.inference.base import ChatMessage

    engine = TransformersEngine(
        "smol", studio_home / "models" / BUNDLED_DIR_NAME, dtype="bfloat16", threads=2, max_parallel=6
    )
    try:
        questions = [
            "What is the capital of France?",
            "Write a haiku about the sea.",
            "List three fruits.",
            "Explain gravity to a child in two sentences.",
            "Say hello in Spanish.",
            "What is 12 times 12?",
        ]

        def chat(i: int) -> Reply:
            params = greedy(16) if i % 2 == 0 else seeded(100 + i, max_tokens=16)
            reply = Reply()
            for item in engine.stream_chat([ChatMessage("user", questions[i])], params, threading.Event()):
                if isinstance(item, TokenEvent):
                    reply.tokens.append(item.token_id)
                    reply.text += item.text
                elif isinstance(item, GenerationEnd):
                    reply.finish = item.finish_reason
            return reply

        solo = [chat(i) for i in range(6)]
        assert "Paris" in solo[0].text
        together: list[Reply | None] = [None] * 6
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, chat(i))) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i in range(6):
            assert together[i] is not None and together[i].key() == solo[i].key(), questions[i]  # type: ignore[union-attr]
        assert engine.batch_counters.peak_batch >= 3 or not batching_on(engine)
    finally:
        engine.unload()
