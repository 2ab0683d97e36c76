"""`studio serve` stopped with SIGTERM (Ctrl-C, `docker stop`) while a long generation runs: it gives the
generation STUDIO_DRAIN_TIMEOUT_S, then cancels it, exits, and the request_log row of that generation is there."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from studio.db import Database, RequestLog
from tests.conftest import start_server

pytestmark = pytest.mark.slow


def test_sigterm_drains_cancels_and_keeps_the_request_log_row(studio_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    server = start_server(
        home, tmp_path / "server.log", env_extra={"STUDIO_DRAIN_TIMEOUT_S": "2"}, args=["--no-worker"]
    )
    answers: list[httpx.Response | Exception] = []

    def long_request() -> None:
        try:
            answers.append(
                httpx.post(
                    f"{server.url}/v1/chat/completions",
                    json={
                        "model": "default",
                        "messages": [{"role": "user", "content": "Tell a long story."}],
                        "max_tokens": 3000,
                        "temperature": 0.7,
                        "seed": 1,
                    },
                    timeout=120,
                )
            )
        except Exception as exc:  # the connection may be closed at the end of the drain
            answers.append(exc)

    client = threading.Thread(target=long_request)
    client.start()
    time.sleep(4)  # the generation is running (model preloaded at start)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)
    took = time.monotonic() - started
    client.join(30)
    assert took < 20, f"shutdown took {took:.1f} s with a 2 s drain"

    db = Database(f"sqlite:///{home / 'studio.db'}")
    try:
        with db.session() as session:
            rows = session.exec(select(RequestLog).where(RequestLog.endpoint == "openai.chat")).all()
    finally:
        db.dispose()
    assert len(rows) == 1, "the cancelled generation's request_log row is missing"
    assert rows[0].finish_reason in ("cancelled", "stop", "length") and rows[0].completion_tokens < 3000
