"""Perplexity and LAMBADA-style accuracy on the bundled model against direct forward passes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from studio.evaluation.config import EvalConfig
from studio.evaluation.lm import LanguageModel, split_last_word
from studio.evaluation.metrics import MetricContext, Sample, builtin_metrics

pytestmark = pytest.mark.slow

BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"
TEXT = (
    "The quick brown fox jumps over the lazy dog. It was a sunny morning in the small village, and the children "
    "were playing in the park near the river while their parents talked about the weather and the harvest."
)


@pytest.fixture(scope="module")
def lm(studio_home: Path) -> LanguageModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = studio_home / "models" / BUNDLED_DIR
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return LanguageModel(model, AutoTokenizer.from_pretrained(str(path)))


def direct_loss(lm: LanguageModel, ids: list[int]) -> float:
    """Mean NLL from the model's own loss (labels = inputs, shifted inside transformers)."""
    import torch

    with torch.inference_mode():
        t = torch.tensor([ids])
        return float(lm.model(input_ids=t, labels=t).loss)


def test_perplexity_of_a_short_text_equals_exp_of_the_model_loss(lm: LanguageModel) -> None:
    ids = lm.tokenizer(TEXT)["input_ids"]
    nll, n = lm.text_nll(TEXT, window=1024, stride=512)
    assert n == len(ids) - 1
    assert math.exp(nll / n) == pytest.approx(math.exp(direct_loss(lm, ids)), rel=1e-4)
    ctx = MetricContext(config=EvalConfig(models=["m"], text_file="t", metrics=["perplexity"]), lm=lm)
    ppl = {m.name: m for m in builtin_metrics()}["perplexity"]
    got = ppl.run(Sample(0, TEXT, None, is_text=True), ctx)
    assert got["perplexity"] == pytest.approx(math.exp(direct_loss(lm, ids)), rel=1e-4)
    assert 1.0 < got["perplexity"] < 100.0  # a sane English sentence for this model


def test_sliding_window_scores_each_token_once(lm: LanguageModel) -> None:
    ids = lm.tokenizer(TEXT)["input_ids"]
    window = 16
    # disjoint windows (stride == window): each chunk is one direct forward pass
    nll, n = lm.nll(ids, window=window, stride=window)
    chunks = [ids[i : i + window] for i in range(0, len(ids), window)]
    expected_nll = sum(direct_loss(lm, c) * (len(c) - 1) for c in chunks if len(c) > 1)
    assert n == sum(len(c) - 1 for c in chunks if len(c) > 1)
    assert nll == pytest.approx(expected_nll, rel=1e-4)
    # overlapping windows score every token but the first exactly once, each with >= window-stride context
    nll_o, n_o = lm.nll(ids, window=window, stride=8)
    assert n_o == len(ids) - 1
    full = direct_loss(lm, ids) * (len(ids) - 1)
    assert full * 0.7 < nll_o < nll  # more context than disjoint chunks → lower NLL, yet above no-limit context


def test_reply_perplexity_scores_only_the_reply(lm: LanguageModel) -> None:
    import torch

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = "The capital of France is Paris."
    ids, start = lm.reply_ids(messages, reply)
    labels = torch.tensor([[-100] * start + ids[start:]])
    with torch.inference_mode():
        loss = float(lm.model(input_ids=torch.tensor([ids]), labels=labels).loss)
    nll, n = lm.reply_nll(messages, reply)
    assert n == len(ids) - start
    assert nll / n == pytest.approx(loss, rel=1e-4)


def test_lambada_last_word_against_greedy_argmax(lm: LanguageModel) -> None:
    import torch

    def direct(text: str) -> bool:
        context, target = split_last_word(text)  # type: ignore[misc]
        prefix = lm.tokenizer(context)["input_ids"]
        want = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([prefix + want])).logits[0]
        got = [int(logits[len(prefix) - 1 + i].argmax()) for i in range(len(want))]
        return got == want

    texts = [
        "The capital of France is Paris",
        "One, two, three, four, five, six, seven, eight, nine, ten",
        "She opened the door and saw a purple elephant",
    ]
    metric = {m.name: m for m in builtin_metrics()}["lambada"]
    results = [metric.run(Sample(i, t, None, is_text=True), MetricContext(lm=lm)) for i, t in enumerate(texts)]
    assert [r["lambada"] for r in results] == [float(direct(t)) for t in texts]
    assert results[1]["lambada"] == 1.0  # counting is easy enough even for 135M parameters


def test_the_engine_exposes_its_weights(ctx: Any) -> None:
    engine = ctx.engines.load("default")
    lm = LanguageModel.from_engine(engine)
    assert lm is not None
    nll, n = lm.text_nll(TEXT)
    assert n > 10 and 0 < nll / n < 5
