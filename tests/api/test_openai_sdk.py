"""The official `openai` SDK against a real `studio serve` process."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_bundled_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert BUNDLED in ids
    assert client.models.retrieve(BUNDLED).id == BUNDLED


def test_chat_non_streaming_with_usage(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="default", messages=FRANCE, temperature=0, max_tokens=32)
    assert resp.model == "default"  # the name the client asked for
    assert "Paris" in (resp.choices[0].message.content or "")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 10
    assert resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.choices[0].logprobs is None


def test_chat_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    kwargs = {"model": BUNDLED, "messages": FRANCE, "temperature": 0, "max_tokens": 32}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    pieces: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert len(pieces) > 3  # arrived token by token
    assert "".join(pieces) == whole
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_max_tokens_and_stop_are_honoured(client: openai.OpenAI) -> None:
    short = client.chat.completions.create(model="default", messages=FRANCE, temperature=0, max_tokens=3)
    assert short.usage is not None and short.usage.completion_tokens == 3
    assert short.choices[0].finish_reason == "length"
    cut = client.chat.completions.create(model="default", messages=FRANCE, temperature=0, max_tokens=32, stop=["Paris"])
    text = cut.choices[0].message.content or ""
    assert "Paris" not in text and text.startswith("The capital")
    assert cut.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    kwargs = {
        "model": "default",
        "messages": [{"role": "user", "content": "Name a colour and a fruit."}],
        "temperature": 1.3,
        "top_p": 0.95,
        "max_tokens": 20,
    }
    a = client.chat.completions.create(**kwargs, seed=11).choices[0].message.content  # type: ignore[call-overload]
    b = client.chat.completions.create(**kwargs, seed=11).choices[0].message.content  # type: ignore[call-overload]
    others = {
        client.chat.completions.create(**kwargs, seed=s).choices[0].message.content  # type: ignore[call-overload]
        for s in (12, 13, 14)
    }
    assert a == b
    assert others - {a}


def test_logprobs_and_top_logprobs(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="default", messages=FRANCE, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3
    )
    content = resp.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content) == resp.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(t.token for t in content).startswith("The capital")
    for tok in content:
        assert tok.logprob <= 0
        alts = [a.logprob for a in tok.top_logprobs]
        assert len(alts) == 3 and alts == sorted(alts, reverse=True)
        assert tok.top_logprobs[0].token == tok.token  # greedy picks the most likely


def test_streaming_logprobs(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="default", messages=FRANCE, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2, stream=True
    )
    tokens = [
        lp for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content for lp in c.logprobs.content
    ]
    assert len(tokens) == 6
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)


def test_bad_temperature_is_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=FRANCE, temperature=3.5)
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict) and body.get("param") == "temperature"
    assert "temperature" in body["message"] and "2" in body["message"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
    ],
)
def test_other_bad_params_name_their_field(client: openai.OpenAI, extra: dict, field: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=FRANCE, **extra)
    assert info.value.body["param"] == field  # type: ignore[index]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such/model", messages=FRANCE)
    assert info.value.status_code == 404
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert "no-such/model" in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such/model", messages=FRANCE, stream=True)


def test_malformed_body_is_400_in_openai_shape(server) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "default", "messages": []}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "default", "messages": FRANCE, "n": 2},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_text_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="default", prompt="The capital of France is", temperature=0, max_tokens=5)
    assert resp.choices[0].text.strip()
    assert resp.usage is not None and resp.usage.completion_tokens == 5


def test_openapi_and_docs_are_served(server) -> None:  # type: ignore[no-untyped-def]
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert "/v1/chat/completions" in spec["paths"]
    assert httpx.get(f"{server.url}/docs", timeout=30).status_code == 200
