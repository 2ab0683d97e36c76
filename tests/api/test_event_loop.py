"""Issue 14, finding 7 (event loop part): resolving a model touches the disk (alias files, model folders) and can
be slow; async routes must do it in a worker thread so that every other request (here /health) still answers.

The resolver is made slow on purpose (2 s per name, as a big model folder or a slow disk would make it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from studio.aliases.resolve import AliasResolver, ResolvedModel
from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings
from tests.api.fake_engine import serve_fake
from tests.api.live_server import live_server

SLOW_S = 2.0


class SlowResolver(AliasResolver):
    """Resolves like the real one, the first time after ``SLOW_S`` seconds; records the threads it ran on."""

    def __init__(self, inner: AliasResolver) -> None:
        super().__init__(inner.store, inner.registry)
        self.threads: list[str] = []

    def resolve(self, name: str) -> ResolvedModel:
        self.threads.append(threading.current_thread().name)
        if len(self.threads) == 1:
            time.sleep(SLOW_S)
        return super().resolve(name)


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[str, SlowResolver]]:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub"))
    serve_fake(ctx)
    resolver = SlowResolver(ctx.engines.resolver)
    ctx.engines.resolver = resolver
    with live_server(create_api(ctx)) as url:
        yield url, resolver
    ctx.close()


def _health_while(url: str, request: Any) -> float:
    """Seconds /health took while ``request`` (run in a thread) was resolving its model."""
    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    time.sleep(0.3)  # the request is inside its slow resolution now
    started = time.perf_counter()
    r = httpx.get(f"{url}/health", timeout=30)
    took = time.perf_counter() - started
    assert r.status_code == 200
    worker.join(30)
    return took


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        ),
        ("/v1/completions", {"model": "default", "prompt": "hi", "max_tokens": 2, "stream": True}),
        ("/api/inference/generate", {"model": "default", "prompt": "hi", "params": {"max_tokens": 2}}),
        ("/api/inference/compare", {"models": ["default", "default"], "prompt": "hi", "params": {"max_tokens": 2}}),
    ],
    ids=["chat", "completions-stream", "generate", "compare"],
)
def test_health_answers_while_a_slow_model_resolution_runs(
    slow: tuple[str, SlowResolver], path: str, body: dict[str, Any]
) -> None:
    url, resolver = slow
    answers: list[int] = []
    took = _health_while(url, lambda: answers.append(httpx.post(f"{url}{path}", json=body, timeout=60).status_code))
    assert answers == [200]
    assert took < 0.5 * SLOW_S, f"/health took {took:.2f} s while a model was being resolved"
    assert "MainThread" not in resolver.threads and not any("live-uvicorn" in t for t in resolver.threads)


def test_health_answers_while_a_websocket_request_resolves(slow: tuple[str, SlowResolver]) -> None:
    url, _resolver = slow
    done: list[bool] = []

    def ws_request() -> None:
        with connect(f"{url.replace('http', 'ws', 1)}/api/inference/stream") as ws:
            ws.send(json.dumps({"model": "default", "prompt": "hi", "params": {"max_tokens": 2}}))
            while not json.loads(ws.recv(timeout=30)).get("done"):
                pass
            done.append(True)

    took = _health_while(url, ws_request)
    assert done == [True]
    assert took < 0.5 * SLOW_S
