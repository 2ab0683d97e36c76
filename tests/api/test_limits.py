"""Issue 14, finding 4 (prompt part) and the max_tokens limit: a prompt over STUDIO_MAX_PROMPT_CHARS is refused with
413 by counting characters, before anything tokenises it, on every surface; asking for more than
STUDIO_MAX_TOKENS_LIMIT new tokens is a 400 naming max_tokens. In-process app with a fake engine serving 'default'."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from studio.aliases.schema import AliasConfig
from studio.api.server import create_api
from studio.context import AppContext
from studio.errors import PayloadTooLargeError, ValidationError
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.api.fake_engine import SlowFakeEngine, serve_fake

LIMIT = 1000


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[TestClient, AppContext, SlowFakeEngine]]:
    ctx = AppContext.create(
        Settings(home=tmp_path, hf_cache=tmp_path / "hub", max_prompt_chars=LIMIT, max_tokens_limit=64)
    )
    fake = serve_fake(ctx)
    with TestClient(create_api(ctx)) as client:
        yield client, ctx, fake
    ctx.close()


def _error(r: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param
    return err


def error_of(r: Any, status: int, param: str | None = None) -> dict[str, Any]:
    """The OpenAI-shaped error of ``r``, after checking its status (and ``param``)."""
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param
    return err


def test_a_prompt_over_the_limit_is_refused_with_413_before_the_engine_sees_it(studio: Any) -> None:
    client, ctx, fake = studio
    half = "x" * (LIMIT // 2 + 1)  # two messages, each under the limit, together over it
    chat = {"model": "default", "messages": [{"role": "system", "content": half}, {"role": "user", "content": half}]}
    refused = [
        (client.post("/v1/chat/completions", json=chat), "messages"),
        (client.post("/v1/chat/completions", json={**chat, "stream": True}), "messages"),
        (client.post("/v1/completions", json={"model": "default", "prompt": half * 2}), "prompt"),
        (client.post("/api/inference/generate", json={"model": "default", "prompt": half * 2}), "prompt"),
        (client.post("/api/inference/generate", json={"model": "default", "messages": chat["messages"]}), "messages"),
        (
            client.post("/api/inference/compare", json={"models": ["default", "default"], "prompt": half * 2}),
            "messages",
        ),
    ]
    for r, param in refused:
        err = error_of(r, 413, param)
        assert "1,000" in err["message"] and "STUDIO_MAX_PROMPT_CHARS" in err["message"]
        assert err["code"] == "request_too_large"
    with client.websocket_connect("/api/inference/stream") as ws:
        ws.send_json({"model": "default", "prompt": half * 2})
        assert ws.receive_json()["error"]["param"] == "prompt"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    # the Gradio handlers call the same core functions
    with pytest.raises(PayloadTooLargeError):
        ctx.engines.start_chat("default", [ChatMessage("user", half * 2)], make_sampling_params(max_tokens=4))
    with pytest.raises(PayloadTooLargeError):
        ctx.engines.start_alias_trial(AliasConfig(alias="t", repo="default"), [ChatMessage("user", half * 2)])
    assert fake.calls == []  # nothing was tokenised or generated
    # at the limit it runs
    ok = client.post("/v1/completions", json={"model": "default", "prompt": "y" * LIMIT, "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "tok tok"


def test_a_large_prompt_is_refused_fast(studio: Any) -> None:
    client, _ctx, fake = studio
    started = time.perf_counter()
    r = client.post("/v1/completions", json={"model": "default", "prompt": "x" * 4_000_000})
    assert time.perf_counter() - started < 5  # was 13 s for 10 MB, tokenising first
    error_of(r, 413, "prompt")
    assert fake.calls == []


def test_max_tokens_over_the_limit_is_a_400_naming_it(studio: Any) -> None:
    client, ctx, _fake = studio
    msgs = [{"role": "user", "content": "hi"}]
    for extra in ({"max_tokens": 65}, {"max_completion_tokens": 65}):
        err = error_of(client.post("/v1/chat/completions", json={"model": "default", "messages": msgs, **extra}), 400)
        assert err["param"] == "max_tokens"
        assert "64" in err["message"] and "STUDIO_MAX_TOKENS_LIMIT" in err["message"]
    error_of(
        client.post("/v1/completions", json={"model": "default", "prompt": "hi", "max_tokens": 65}), 400, "max_tokens"
    )
    r = client.post("/api/inference/generate", json={"model": "default", "prompt": "hi", "params": {"max_tokens": 65}})
    error_of(r, 400, "params.max_tokens")
    with pytest.raises(ValidationError, match="STUDIO_MAX_TOKENS_LIMIT"):
        ctx.engines.start_chat("default", [ChatMessage("user", "hi")], make_sampling_params(max_tokens=65))
    ok = client.post("/v1/chat/completions", json={"model": "default", "messages": msgs, "max_tokens": 64})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 64
