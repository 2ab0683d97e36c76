"""Issue 14, finding 5: a client that leaves cancels its generation, streaming or not, on every generating route.

A real uvicorn on loopback and a raw socket that sends a request for 3000 tokens and closes after half a second;
the generation must stop within a moment and its request_log row say ``cancelled``."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from studio.api.server import create_api
from studio.context import AppContext
from studio.db import RequestLog
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.api.fake_engine import SlowFakeEngine, serve_fake
from tests.api.live_server import live_server, raw_request

MSGS = [{"role": "user", "content": "count to a million"}]


def rows(ctx: AppContext) -> list[RequestLog]:
    with ctx.db.session() as session:
        return list(session.exec(select(RequestLog)).all())


def send_and_leave(url: str, path: str, body: dict[str, Any], stay_s: float = 0.5) -> float:
    """Send one request on a raw socket, read nothing, close after ``stay_s``; return when it closed."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(raw_request(port, "POST", path, json.dumps(body).encode()))
        time.sleep(stay_s)
    return time.monotonic()


def wait_until(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` held (fails after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, AppContext, SlowFakeEngine]]:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub", max_queued_per_model=1))
    fake = serve_fake(ctx, delay=0.01)  # 3000 tokens would take 30 s
    with live_server(create_api(ctx)) as url:
        yield url, ctx, fake
    ctx.close()


@pytest.mark.parametrize(
    ("path", "body", "generations"),
    [
        ("/v1/chat/completions", {"model": "default", "messages": MSGS, "max_tokens": 3000}, 1),
        ("/v1/chat/completions", {"model": "default", "messages": MSGS, "max_tokens": 3000, "stream": True}, 1),
        ("/v1/completions", {"model": "default", "prompt": "1, 2, 3,", "max_tokens": 3000}, 1),
        ("/api/inference/generate", {"model": "default", "messages": MSGS, "params": {"max_tokens": 3000}}, 1),
        (
            "/api/inference/compare",
            {"models": ["default", "default"], "messages": MSGS, "params": {"max_tokens": 3000}},
            2,
        ),
    ],
    ids=["chat", "chat-stream", "completions", "generate", "compare"],
)
def test_a_client_that_leaves_cancels_its_generation(
    served: tuple[str, AppContext, SlowFakeEngine], path: str, body: dict[str, Any], generations: int
) -> None:
    url, ctx, fake = served
    left = send_and_leave(url, path, body)
    wait_until(lambda: fake.running == 0, timeout=5)
    latency = time.monotonic() - left
    assert latency < 2.0, f"the generation ran on for {latency:.2f} s after the client left"
    wait_until(lambda: len(rows(ctx)) == generations, timeout=5)
    for row in rows(ctx):
        assert row.finish_reason == "cancelled"
        assert 0 < row.completion_tokens < 500  # ~50 tokens in the half second it was wanted


def test_a_waiting_request_whose_client_leaves_gives_up_its_place(
    served: tuple[str, AppContext, SlowFakeEngine],
) -> None:
    url, ctx, fake = served
    key = ctx.engines.resolve("default").entry.id
    running = [
        ctx.engines.start_chat("default", [ChatMessage("user", "hold")], make_sampling_params(max_tokens=5000))
        for _ in range(ctx.settings.max_running_per_model)
    ]
    wait_until(lambda: ctx.engines.admission.counts(key)[0] == len(running), timeout=5)
    send_and_leave(url, "/v1/chat/completions", {"model": "default", "messages": MSGS, "max_tokens": 10}, 0.3)
    wait_until(lambda: ctx.engines.admission.counts(key) == (len(running), 0), timeout=3)
    assert len(fake.calls) == len(running)  # the one that waited never ran
    for handle in running:
        handle.cancel()
        assert handle.join(5)


@pytest.mark.slow
def test_a_client_that_leaves_stops_a_real_generation(studio_home: Path, tmp_path: Path) -> None:
    """The finding as reported: a non-streaming request for 3000 tokens from the bundled model, abandoned."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    ctx = AppContext.create(Settings(home=home, hf_cache=studio_home / "hf-cache"))
    try:
        ctx.engines.chat("default", [ChatMessage("user", "hi")], make_sampling_params(max_tokens=2))  # warm up
        with live_server(create_api(ctx)) as url:
            body = {"model": "default", "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000, "temperature": 0}
            left = send_and_leave(url, "/v1/completions", body, stay_s=3.0)
            waited = wait_until(lambda: len(rows(ctx)) == 2, timeout=30)  # the warm-up's row, then this one
        row = next(r for r in rows(ctx) if r.endpoint == "openai.completions")
        assert row.finish_reason == "cancelled" and 0 < row.completion_tokens < 3000
        assert time.monotonic() - left < 5.0, f"stopped {waited:.2f} s after the client left"
    finally:
        ctx.close()


@pytest.mark.slow
def test_a_client_that_leaves_stops_its_generation_on_studio_serve(server: Any) -> None:
    """The same through the whole served app (front-door middleware, Gradio mounted), as a user runs it."""
    from studio.db import Database

    db = Database(Settings(home=server.home).db_url)
    try:

        def cancelled_rows() -> list[RequestLog]:
            with db.session() as session:
                query = select(RequestLog).where(RequestLog.endpoint == "openai.completions")
                return [r for r in session.exec(query).all() if r.finish_reason == "cancelled"]

        warm = {"model": "default", "prompt": "hi", "max_tokens": 2}
        assert httpx.post(f"{server.url}/v1/completions", json=warm, timeout=120).status_code == 200
        before = len(cancelled_rows())
        body = {"model": "default", "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000, "temperature": 0}
        left = send_and_leave(server.url, "/v1/completions", body, stay_s=3.0)
        wait_until(lambda: len(cancelled_rows()) > before, timeout=30)
        assert time.monotonic() - left < 5.0
        assert cancelled_rows()[-1].completion_tokens < 3000
    finally:
        db.dispose()
