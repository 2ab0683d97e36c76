"""Token-level view (probability colours, alternatives, logprob chart) and attention maps (eager forward
pass, heat maps per layer/head).

The attention tests run on a tiny random Llama with a byte-level BPE tokenizer trained here in
milliseconds, saved and reloaded through ``AutoModelForCausalLM`` exactly as a user's model would be; the
tests marked ``slow`` use the bundled SmolLM2-135M for a real reply.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from studio.context import AppContext
from studio.errors import ValidationError
from studio.inference.base import ChatMessage, TokenEvent, TopLogprob
from studio.inference.params import make_sampling_params
from studio.playground.attention import (
    attention_figure,
    attention_summary,
    compute_attention,
)
from studio.playground.token_view import logprob_figure, token_view_html

FRANCE = [ChatMessage("user", "What is the capital of France?")]


def _event(token: str, logprob: float, alts: list[tuple[str, float]] | None = None, token_id: int = 1) -> TokenEvent:
    top = tuple(TopLogprob(t, 100 + i, lp) for i, (t, lp) in enumerate(alts or []))
    return TokenEvent(token_id=token_id, token=token, text=token, logprob=logprob, top_logprobs=top, time=0.0)


def _token_links(html: str) -> list[str]:
    return re.findall(r'<a class="wt-tok"[^>]*>', html)


def _hue(tag: str) -> int:
    match = re.search(r"background:hsl\((\d+),", tag)
    assert match, tag
    return int(match.group(1))


# -- token view ----------------------------------------------------------------------------------------------
def test_token_view_escapes_html_in_tokens_and_alternatives() -> None:
    evil = '<script>alert("x")</script>'
    attr_breaker = '" onmouseover="alert(1)'
    html = token_view_html(
        [_event(evil, -0.1, [(evil, -0.1), ("<img src=x onerror=alert(2)>", -3.0)]), _event(attr_breaker, -2.0)]
    )

    assert "<script" not in html
    assert "<img" not in html
    assert 'onmouseover="alert' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html  # shown as text, not run
    assert len(_token_links(html)) == 2


def test_token_colours_go_from_red_for_unlikely_to_green_for_likely() -> None:
    html = token_view_html([_event("sure", math.log(0.97)), _event("maybe", math.log(0.5)), _event("odd", -9.0)])

    hues = [_hue(tag) for tag in _token_links(html)]
    assert hues[0] > 100  # green
    assert 50 <= hues[1] <= 70  # yellow
    assert hues[2] < 5  # red
    assert "linear-gradient" in html  # the legend explains the scale


def test_tooltip_data_and_details_table_list_top5_alternatives() -> None:
    alts = [(" Paris", math.log(0.8)), (" Lyon", math.log(0.1)), (" the", math.log(0.05))]
    alts += [(f" alt{i}", -5.0 - i) for i in range(4)]  # 7 alternatives: only 5 are shown
    html = token_view_html([_event(" Paris", math.log(0.8), alts, token_id=100)])

    tag = _token_links(html)[0]
    title = re.search(r'title="([^"]*)"', tag)
    assert title
    assert "logprob -0.223" in title.group(1)
    assert "80.0%" in title.group(1)
    for shown in ("␣Paris", "␣Lyon", "␣the", "␣alt0", "␣alt1"):
        assert shown in title.group(1)
    assert "alt2" not in title.group(1)
    assert 'data-logprob="-0.223"' in tag
    assert "&quot;top&quot;: [{&quot;token&quot;: &quot; Paris&quot;" in tag  # JSON, escaped into the attribute

    details = html.split('<div class="token-details">', 1)[1]
    assert details.count("<tr id=") == 1
    assert "Lyon</span> 10.0%" in details
    assert "alt1" in details and "alt2" not in details
    assert 'href="#wt-tok-0"' in tag and 'id="wt-tok-0"' in details  # click a token → its row


def test_whitespace_is_visible_and_empty_list_says_so() -> None:
    html = token_view_html([_event(" Paris", -0.1), _event("\n", -0.2), _event("", -0.3)])
    assert '<span class="wt-ws">␣</span>Paris' in html
    assert '<span class="wt-ws">↵</span></a><br>' in html
    assert '<span class="wt-ws">∅</span>' in html

    assert "No tokens yet" in token_view_html([])


def test_logprob_figure_has_one_point_per_token() -> None:
    tokens = [
        _event("The", -0.05, [("The", -0.05), ("A", -3.2)]),
        _event(" <b>", -2.5, [(" cap", -0.3), (" <b>", -2.5)]),
        _event(" Paris", -0.01, [(" Paris", -0.01)]),
    ]
    fig = logprob_figure(tokens)

    chosen, best = fig.data
    assert list(chosen.x) == [0, 1, 2]
    assert list(chosen.y) == [-0.05, -2.5, -0.01]
    assert list(best.y) == [-0.05, -0.3, -0.01]
    assert "␣cap" in chosen.text[1] and "&lt;b&gt;" in chosen.text[1]  # hover: token and alternatives, escaped
    assert fig.layout.yaxis.title.text == "log probability"
    assert fig.layout.xaxis.title.text == "position"


def test_logprob_figure_without_tokens_says_no_tokens_yet() -> None:
    fig = logprob_figure([])
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text == "no tokens yet"


# -- attention on a tiny model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A 3-layer, 4-head random Llama and a byte-level BPE tokenizer, saved and loaded back."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(["The capital of France is Paris.\nWhat is the capital of Italy? Rome."] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-attn")
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_compute_attention_gives_causal_softmax_rows_and_restores_sdpa(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompt = _ids(tokenizer, "What is the capital of France?\n")
    ids = prompt + _ids(tokenizer, "Paris.")
    assert model.config._attn_implementation == "sdpa"

    maps = compute_attention(model, tokenizer, ids, prompt_len=len(prompt))

    n = len(ids)
    assert maps.weights.shape == (3, 4, n, n)
    assert maps.weights.dtype == np.float32
    np.testing.assert_allclose(maps.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert np.abs(np.triu(maps.weights, k=1)).max() < 1e-7  # no token attends to a later one
    assert maps.weights[:, :, 0, 0] == pytest.approx(1.0)  # the first token can only see itself
    assert maps.prompt_len == len(prompt) and maps.truncated == 0 and maps.token_ids == ids
    assert model.config._attn_implementation == "sdpa"  # switched back after the pass
    assert len(maps.tokens) == n
    assert "".join(maps.tokens) == "What␣is␣the␣capital␣of␣France?↵Paris."  # no byte-level 'Ġ'/'Ċ' left
    assert attention_summary(maps) == {"layers": 3, "heads": 4, "seq_len": n, "prompt_len": len(prompt), "truncated": 0}


def test_compute_attention_keeps_only_the_last_max_tokens(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompt = _ids(tokenizer, "What is the capital of Italy?\n")
    ids = prompt + _ids(tokenizer, "Rome.")
    full = compute_attention(model, tokenizer, ids, prompt_len=len(prompt))

    maps = compute_attention(model, tokenizer, ids, prompt_len=len(prompt), max_tokens=5)

    cut = len(ids) - 5
    assert maps.weights.shape == (3, 4, 5, 5)
    assert maps.truncated == cut
    assert maps.tokens == full.tokens[cut:] and maps.token_ids == ids[cut:]
    assert maps.prompt_len == max(0, len(prompt) - cut)
    # Same forward pass over the whole sequence: the window is a slice of the full maps, not a re-run.
    np.testing.assert_allclose(maps.weights, full.weights[:, :, cut:, cut:], atol=1e-6)
    assert (maps.weights.sum(axis=-1) <= 1.0 + 1e-5).all()
    fig = attention_figure(maps, 0, 0)
    assert "earlier not shown" in fig.layout.title.text
    assert fig.data[0].x[0].startswith(f"{cut} ")  # labels keep the original positions


def test_attention_figure_shows_the_slice_or_head_average(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompt = _ids(tokenizer, "The capital of France")
    ids = prompt + _ids(tokenizer, " is Paris")
    maps = compute_attention(model, tokenizer, ids, prompt_len=len(prompt))

    one = attention_figure(maps, 1, 2)
    avg = attention_figure(maps, 2, None)

    np.testing.assert_allclose(one.data[0].customdata, maps.weights[1, 2])  # the weights, for the hover
    np.testing.assert_allclose(avg.data[0].customdata, maps.weights[2].mean(axis=0), rtol=1e-6)
    assert "layer 1" in one.layout.title.text and "head 2" in one.layout.title.text
    assert "average" in avg.layout.title.text
    heat = one.data[0]
    # colours on a log scale from 0.001 to 1, the colour bar labelled in weights
    np.testing.assert_allclose(heat.z, np.log10(np.clip(maps.weights[1, 2], 1e-3, 1.0)), rtol=1e-6)
    assert (heat.zmin, heat.zmax) == (-3.0, 0.0)
    assert list(heat.colorbar.ticktext) == ["0.001", "0.01", "0.1", "1"]
    assert list(heat.x) == list(heat.y) == [f"{i} {t}" for i, t in enumerate(maps.tokens)]
    assert one.layout.xaxis.title.text.startswith("key") and one.layout.yaxis.title.text == "query"
    edges = {(s.x0, s.x1, s.y0, s.y1) for s in one.layout.shapes}
    boundary = len(prompt) - 0.5
    assert (boundary, boundary, -0.5, len(ids) - 0.5) in edges  # the prompt | reply line


@pytest.mark.parametrize(
    ("layer", "head", "param", "allowed"),
    [(3, 0, "layer", "0 and 2"), (-1, None, "layer", "0 and 2"), (0, 4, "head", "0 and 3")],
)
def test_attention_figure_rejects_out_of_range_layer_or_head(
    tiny: tuple[Any, Any], layer: int, head: int | None, param: str, allowed: str
) -> None:
    model, tokenizer = tiny
    maps = compute_attention(model, tokenizer, _ids(tokenizer, "Paris"))
    with pytest.raises(ValidationError, match=allowed) as info:
        attention_figure(maps, layer, head)
    assert info.value.param == param


def test_compute_attention_rejects_empty_and_oversized_input(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValidationError) as info:
        compute_attention(model, tokenizer, [])
    assert info.value.param == "token_ids"

    with pytest.raises(ValidationError, match="GiB") as info:
        compute_attention(model, tokenizer, [1] * 100, memory_limit=1000)
    assert info.value.param == "token_ids"
    assert model.config._attn_implementation == "sdpa"


def test_attention_implementation_is_restored_when_the_pass_fails(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with pytest.raises(IndexError):  # a token id outside the vocabulary fails inside the embedding
        compute_attention(model, tokenizer, [1, len(tokenizer) + 50])
    assert model.config._attn_implementation == "sdpa"


# -- the bundled model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def france_reply(ctx: AppContext) -> tuple[Any, list[int], list[TokenEvent]]:
    engine = ctx.engines.load("default")
    params = make_sampling_params(temperature=0, max_tokens=24, logprobs=True, top_logprobs=5)
    result = ctx.engines.chat("default", FRANCE, params)
    prompt_ids = engine.tokenizer(engine.render_chat(FRANCE), add_special_tokens=False)["input_ids"]  # type: ignore[attr-defined]
    return engine, list(prompt_ids), result.tokens


@pytest.mark.slow
def test_bundled_reply_attention_has_30_layers_of_9_heads(
    france_reply: tuple[Any, list[int], list[TokenEvent]],
) -> None:
    engine, prompt_ids, tokens = france_reply
    ids = prompt_ids + [t.token_id for t in tokens]
    before = engine.model.config._attn_implementation

    maps = compute_attention(engine.model, engine.tokenizer, ids, prompt_len=len(prompt_ids))

    n = len(ids)
    assert maps.weights.shape == (30, 9, n, n)
    np.testing.assert_allclose(maps.weights.sum(axis=-1), 1.0, atol=2e-2)  # bf16 on most CPUs
    assert np.abs(np.triu(maps.weights, k=1)).max() < 1e-6
    assert engine.model.config._attn_implementation == before != "eager"
    assert "␣Paris" in maps.tokens[len(prompt_ids) :]
    assert maps.tokens[0] == "<|im_start|>"
    fig = attention_figure(maps, 0, 0)
    np.testing.assert_allclose(fig.data[0].customdata, maps.weights[0, 0])
    avg = attention_figure(maps, 29, None)
    np.testing.assert_allclose(avg.data[0].customdata, maps.weights[29].mean(axis=0), rtol=1e-5)
    with pytest.raises(ValidationError, match="between 0 and 29") as info:
        attention_figure(maps, 30, 0)
    assert info.value.param == "layer"


@pytest.mark.slow
def test_bundled_model_replies_the_same_after_an_attention_pass(
    ctx: AppContext, france_reply: tuple[Any, list[int], list[TokenEvent]]
) -> None:
    engine, prompt_ids, tokens = france_reply
    compute_attention(engine.model, engine.tokenizer, prompt_ids, prompt_len=len(prompt_ids))

    again = ctx.engines.chat("default", FRANCE, make_sampling_params(temperature=0, max_tokens=24))

    assert [t.token_id for t in again.tokens] == [t.token_id for t in tokens]
    assert "Paris" in again.text


@pytest.mark.slow
def test_bundled_reply_token_view_and_chart(france_reply: tuple[Any, list[int], list[TokenEvent]]) -> None:
    _, _, tokens = france_reply
    html = token_view_html(tokens)
    fig = logprob_figure(tokens)

    assert len(_token_links(html)) == len(tokens)
    assert "Paris" in html
    assert list(fig.data[0].y) == pytest.approx([t.logprob for t in tokens])
    rows = html.split("<tr id=")[1:]
    assert len(rows) == len(tokens)
    assert all(row.count("<span style=") == 1 + 5 for row in rows)  # the token and its 5 alternatives
