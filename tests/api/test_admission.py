"""Issue 14, finding 9: admission control per model. At most STUDIO_MAX_RUNNING_PER_MODEL generations run and
STUDIO_MAX_QUEUED_PER_MODEL wait; beyond that every surface answers 429 with Retry-After, before streaming."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from studio.api.server import create_api
from studio.context import AppContext
from studio.errors import RateLimitError
from studio.inference.base import ChatMessage
from studio.inference.manager import GenerationHandle
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.api.fake_engine import SlowFakeEngine, serve_fake

HI = [ChatMessage("user", "hi")]


def _studio(tmp_path: Path, running: int, queued: int, delay: float = 0.01) -> tuple[AppContext, SlowFakeEngine]:
    ctx = AppContext.create(
        Settings(home=tmp_path, hf_cache=tmp_path / "hub", max_running_per_model=running, max_queued_per_model=queued)
    )
    return ctx, serve_fake(ctx, delay)


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[AppContext, SlowFakeEngine]]:
    ctx, fake = _studio(tmp_path, running=2, queued=4)
    yield ctx, fake
    ctx.close()


def _long(ctx: AppContext, n: int = 5000) -> GenerationHandle:
    return ctx.engines.start_chat("default", HI, make_sampling_params(max_tokens=n))


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_two_run_four_wait_and_the_seventh_is_refused(busy: tuple[AppContext, SlowFakeEngine]) -> None:
    ctx, fake = busy
    handles = [_long(ctx) for _ in range(6)]
    key = ctx.engines.resolve("default").entry.id
    _wait_for(lambda: fake.running == 2)
    assert ctx.engines.admission.counts(key) == (2, 4)
    with pytest.raises(RateLimitError) as refused:
        _long(ctx)
    assert refused.value.status_code == 429 and refused.value.retry_after >= 1
    assert "STUDIO_MAX_RUNNING_PER_MODEL=2" in refused.value.message
    assert "STUDIO_MAX_QUEUED_PER_MODEL=4" in refused.value.message
    # a waiting one that is cancelled gives its place up, and never reaches the engine
    handles[5].cancel()
    _wait_for(lambda: ctx.engines.admission.counts(key) == (2, 3))
    handles.append(_long(ctx))
    # finishing a running one lets the first in line run: first come, first served
    handles[0].cancel()
    _wait_for(lambda: handles[2].result.start is not None)
    time.sleep(0.1)
    assert handles[3].result.start is None and fake.most_running == 2
    for h in handles:
        h.cancel()
    for h in handles:
        assert h.join(10)
    assert handles[5].result.start is None  # cancelled while waiting: the engine never saw it
    assert ctx.engines.admission.counts(key) == (0, 0)


def test_retry_after_comes_from_recent_generation_times(tmp_path: Path) -> None:
    ctx, _fake = _studio(tmp_path, running=1, queued=0, delay=0.02)
    try:
        first = ctx.engines.start_chat("default", HI, make_sampling_params(max_tokens=100)).wait()
        assert first.stats.total_s >= 2.0
        holder = _long(ctx)
        with pytest.raises(RateLimitError) as refused:
            _long(ctx)
        # one running place, recent generations took ~2 s: a place frees in about that long
        assert 2.0 <= refused.value.retry_after < 4.0
        with TestClient(create_api(ctx)) as client:
            r = client.post(
                "/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "x"}]}
            )
        assert r.status_code == 429 and r.headers["retry-after"] in ("3", "4")
        holder.cancel()
    finally:
        ctx.close()


def test_rest_and_websocket_answer_429_with_retry_after_before_any_stream(tmp_path: Path) -> None:
    ctx, _fake = _studio(tmp_path, running=1, queued=1)
    try:
        holders = [_long(ctx), _long(ctx)]
        chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        with TestClient(create_api(ctx)) as client:
            responses = [
                client.post("/v1/chat/completions", json=chat),
                client.post("/v1/chat/completions", json={**chat, "stream": True}),
                client.post("/v1/completions", json={"model": "default", "prompt": "hi", "stream": True}),
                client.post("/api/inference/generate", json={"model": "default", "prompt": "hi", "stream": True}),
                client.post("/api/inference/compare", json={"models": ["default", "default"], "prompt": "hi"}),
            ]
            for r in responses:
                assert r.status_code == 429, r.text
                assert r.headers["content-type"] == "application/json"  # not an event stream that fails later
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["type"] == "rate_limit_error"
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
            with client.websocket_connect("/api/inference/stream") as ws:
                ws.send_json({"model": "default", "prompt": "hi"})
                assert ws.receive_json()["error"]["type"] == "rate_limit_error"
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                assert closed.value.code == 1013  # try again later
            for h in holders:
                h.cancel()
                h.join(10)
            ok = client.post("/v1/chat/completions", json={**chat, "max_tokens": 3})
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "tok tok tok"
    finally:
        ctx.close()


def test_the_gradio_decorator_shows_a_busy_model_as_a_clear_toast() -> None:
    import gradio as gr

    from components.common import handle_errors

    @handle_errors
    def chat() -> Iterator[str]:
        yield "…"
        raise RateLimitError("model 'm' is busy: ...; try again in 3 s", retry_after=3)

    with pytest.raises(gr.Error) as shown:
        list(chat())
    assert shown.value.title == "Model busy" and "try again in 3 s" in shown.value.message


def test_an_alias_made_for_more_streams_raises_its_models_running_cap() -> None:
    """Issue 18: STUDIO_MAX_RUNNING_PER_MODEL=8 ran an alias with n_parallel 32 eight at a time (the vLLM route at 32
    streams queued 24 of them). The alias's n_parallel raises the cap; it never lowers the setting."""
    import threading

    from studio.inference.admission import Admission

    admission = Admission(max_running=1, max_queued=0)
    tickets = [admission.admit("m", running_cap=3) for _ in range(3)]
    assert all(admission.wait_turn(t, threading.Event(), poll_s=0.01) for t in tickets)
    assert admission.counts("m") == (3, 0)
    with pytest.raises(RateLimitError, match="n_parallel=3 of the alias"):
        admission.admit("m", running_cap=3)
    for t in tickets:
        admission.release(t)
    low = admission.admit("m", running_cap=0)  # no alias value (or a smaller one): the setting holds
    assert admission.wait_turn(low, threading.Event(), poll_s=0.01)
    with pytest.raises(RateLimitError, match="STUDIO_MAX_RUNNING_PER_MODEL=1"):
        admission.admit("m")
