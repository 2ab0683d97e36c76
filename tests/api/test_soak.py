"""Issue 14, finding 9, under load: 32 clients stream from the bundled model at once through a real server on
loopback, with low caps (2 running, 4 waiting). Nothing fails except 429s, each with Retry-After; every
accepted stream completes; clients that honour Retry-After all get their reply in the end."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings
from tests.api.live_server import live_server

CLIENTS = 32
RUNNING, QUEUED = 2, 4
BODY = {
    "model": "default",
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0,
    "stream": True,
}


@dataclass
class Outcome:
    statuses: list[int] = field(default_factory=list)
    retry_after: list[int] = field(default_factory=list)
    ttft_s: float | None = None
    text: str = ""
    finish: str | None = None
    done: bool = False
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def soak_url(studio_home: Path, tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    ctx = AppContext.create(
        Settings(
            home=home,
            hf_cache=studio_home / "hf-cache",
            max_running_per_model=RUNNING,
            max_queued_per_model=QUEUED,
        )
    )
    ctx.engines.load("default")
    with live_server(create_api(ctx)) as url:
        yield url
    ctx.close()


def _stream_once(client: httpx.Client, url: str, out: Outcome) -> int:
    started = time.perf_counter()
    with client.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=300) as r:
        out.statuses.append(r.status_code)
        if r.status_code == 429:
            err = json.loads(r.read())["error"]
            if err["type"] != "rate_limit_error" or not r.headers.get("retry-after", "").isdigit():
                out.problems.append(f"bad 429: {r.headers} {err}")
            else:
                out.retry_after.append(int(r.headers["retry-after"]))
            return 429
        if r.status_code != 200:
            out.problems.append(f"{r.status_code}: {r.read()[:300]!r}")
            return r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                out.done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out.problems.append(f"error in stream: {chunk}")
                continue
            delta = chunk["choices"][0]["delta"].get("content") or ""
            if delta and out.ttft_s is None:
                out.ttft_s = time.perf_counter() - started
            out.text += delta
            out.finish = chunk["choices"][0]["finish_reason"] or out.finish
        return 200


@pytest.mark.slow
def test_32_streams_at_once_get_429_with_retry_after_and_every_accepted_one_completes(soak_url: str) -> None:
    outcomes = [Outcome() for _ in range(CLIENTS)]
    start_together = threading.Barrier(CLIENTS)
    deadline = time.monotonic() + 240

    def client_run(out: Outcome) -> None:
        with httpx.Client() as client:
            start_together.wait()
            while time.monotonic() < deadline:
                if _stream_once(client, soak_url, out) != 429:
                    return
                time.sleep(min(out.retry_after[-1] if out.retry_after else 1, 10))  # honour Retry-After

    threads = [threading.Thread(target=client_run, args=(o,)) for o in outcomes]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    took = time.monotonic() - began

    first = [o.statuses[0] for o in outcomes]
    problems = [p for o in outcomes for p in o.problems]
    assert problems == []
    assert set(first) <= {200, 429}
    assert first.count(429) >= CLIENTS - (RUNNING + QUEUED) - 4, first  # the caps held on the first wave
    assert first.count(200) >= RUNNING + QUEUED
    # everyone got a whole reply in the end: finish reason, [DONE], text
    for o in outcomes:
        assert o.statuses[-1] == 200 and o.done and o.finish in ("stop", "length") and o.text, o
    ttfts = sorted(o.ttft_s for o in outcomes if o.ttft_s is not None)
    retries = [len(o.statuses) - 1 for o in outcomes]
    print(
        f"\nsoak: {CLIENTS} clients, caps {RUNNING}+{QUEUED}: first wave {first.count(200)} accepted / "
        f"{first.count(429)} x 429; {sum(retries)} retries; all {CLIENTS} completed in {took:.1f} s; "
        f"TTFT median {statistics.median(ttfts):.2f} s, p95 {ttfts[int(0.95 * (len(ttfts) - 1))]:.2f} s; "
        f"Retry-After values {sorted({r for o in outcomes for r in o.retry_after})}"
    )
