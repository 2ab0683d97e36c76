"""Issue 14 (low): shutdown drains for at most N seconds, then cancels, and every generation still writes its
request_log row before the database closes. New generations are refused (503) while draining."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from studio.api.server import create_api
from studio.context import AppContext
from studio.db import Database, RequestLog
from studio.errors import ShuttingDownError
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.api.fake_engine import serve_fake

HI = [ChatMessage("user", "hi")]


def _rows(settings: Settings) -> dict[str, RequestLog]:
    db = Database(settings.db_url)  # the studio's own connection is closed by now
    try:
        with db.session() as session:
            return {r.request_id: r for r in session.exec(select(RequestLog)).all()}
    finally:
        db.dispose()


def test_close_lets_short_generations_finish_then_cancels_the_rest_and_keeps_every_row(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    ctx = AppContext.create(settings)
    fake = serve_fake(ctx, delay=0.02)
    client = TestClient(create_api(ctx))
    short = ctx.engines.start_chat("default", HI, make_sampling_params(max_tokens=10))  # ~0.2 s
    long = ctx.engines.start_chat("default", HI, make_sampling_params(max_tokens=1000))  # ~20 s
    took: list[float] = []

    def shut_down() -> None:
        started = time.monotonic()
        ctx.close(drain_timeout_s=1.0)
        took.append(time.monotonic() - started)

    closer = threading.Thread(target=shut_down)
    closer.start()
    time.sleep(0.3)
    with pytest.raises(ShuttingDownError):  # draining: nothing new starts, on any surface
        ctx.engines.start_chat("default", HI, make_sampling_params(max_tokens=1))
    r = client.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    assert "shutting down" in r.json()["error"]["message"]
    closer.join(30)
    assert 1.0 <= took[0] < 4.0  # waited the drain timeout, then cancelled promptly
    assert ctx.engines.loaded() == [] and fake.running == 0
    rows = _rows(settings)
    assert set(rows) == {short.id, long.id}
    assert rows[short.id].finish_reason == "length" and rows[short.id].completion_tokens == 10
    assert rows[long.id].finish_reason == "cancelled" and 10 < rows[long.id].completion_tokens < 1000


def test_close_without_drain_cancels_at_once_and_still_writes_the_row(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    ctx = AppContext.create(settings)
    serve_fake(ctx, delay=0.02)
    running = [ctx.engines.start_chat("default", HI, make_sampling_params(max_tokens=1000)) for _ in range(3)]
    time.sleep(0.3)
    started = time.monotonic()
    ctx.close()
    assert time.monotonic() - started < 2.0
    rows = _rows(settings)  # right after close: nothing is written behind its back
    assert set(rows) == {h.id for h in running}
    assert {r.finish_reason for r in rows.values()} == {"cancelled"}
