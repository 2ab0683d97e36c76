"""`/api/inference/...` over real HTTP (httpx) and a real WebSocket client (websockets) against `studio serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def test_load_lists_and_generate_with_logprobs(http: httpx.Client) -> None:
    r = http.post("/api/inference/load", json={"model": "default"})
    assert r.status_code == 200, r.text
    assert r.json()["loaded"]["model"] == BUNDLED
    loaded = http.get("/api/inference/models/loaded").json()
    entry = next(m for m in loaded["models"] if m["model"] == BUNDLED)
    # the chosen engine and why (auto keeps the bundled model on transformers for adapters and attention)
    assert entry["engine"] == "transformers"
    assert entry["engine_reason"].startswith("auto: the bundled model runs on transformers")
    assert entry["memory_bytes"] > 100_000_000 and loaded["memory"]["process_rss"] > entry["memory_bytes"]

    body = {"model": "default", "messages": FRANCE, "params": {"temperature": 0, "max_tokens": 12, "top_logprobs": 5}}
    out = http.post("/api/inference/generate", json=body).json()
    assert "Paris" in out["text"]
    assert out["usage"]["completion_tokens"] == len(out["tokens"]) > 0
    assert out["stats"]["ttft_s"] > 0 and out["stats"]["tokens_per_s"] > 0
    first = out["tokens"][0]
    assert first["logprob"] <= 0 and len(first["top"]) == 5
    assert [t["logprob"] for t in first["top"]] == sorted((t["logprob"] for t in first["top"]), reverse=True)


def test_generate_with_a_raw_prompt_and_sse_stream(http: httpx.Client) -> None:
    body = {"model": "default", "prompt": "The capital of France is", "params": {"temperature": 0, "max_tokens": 6}}
    plain = http.post("/api/inference/generate", json=body).json()
    with http.stream("POST", "/api/inference/generate", json={**body, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        msgs = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert msgs[0]["type"] == "start"
    tokens = [m for m in msgs if m["type"] == "token"]
    assert len(tokens) == 6
    assert msgs[-1]["done"] is True and msgs[-1]["text"] == plain["text"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "default", "prompt": "   "}, "body"),
        ({"model": "default"}, "body"),
        ({"model": "default", "prompt": "hi", "params": {"temperature": 9}}, "params.temperature"),
        ({"model": "default", "prompt": "hi", "params": {"temprature": 0.1}}, "params.temprature"),
        ({"model": "default", "prompt": "hi", "adapter": "never-loaded"}, "adapter"),
    ],
)
def test_bad_generate_requests_are_400_naming_the_field(http: httpx.Client, body: dict, param: str) -> None:
    r = http.post("/api/inference/generate", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_model_and_prompt_too_long(http: httpx.Client) -> None:
    r = http.post("/api/inference/generate", json={"model": "nope/nope", "prompt": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = http.post("/api/inference/generate", json={"model": "default", "prompt": "word " * 9000})
    assert r.status_code == 400
    assert "more than fit" in r.json()["error"]["message"]
    assert http.post("/api/inference/models/nope%2Fnope/unload").status_code == 404


def test_adapter_swap_and_compare(http: httpx.Client, lora_adapters: tuple[Path, Path]) -> None:
    base_body = {"model": "default", "messages": FRANCE, "params": {"temperature": 0, "max_tokens": 10}}
    base_text = http.post("/api/inference/generate", json=base_body).json()["text"]
    try:
        r = http.post("/api/inference/load", json={"model": "default", "adapter": str(lora_adapters[0])})
        assert r.status_code == 200, r.text
        assert r.json()["loaded"]["active_adapter"] == "lora-a"
        with_a = http.post("/api/inference/generate", json=base_body).json()["text"]
        assert with_a != base_text

        swap = http.post(f"/api/inference/models/{BUNDLED}/swap-adapter", json={"adapter": "lora-b"})
        assert swap.status_code == 200 and swap.json()["active_adapter"] == "lora-b"
        cmp = http.post("/api/inference/compare", json={**base_body, "adapter": "lora-a"}).json()
        assert cmp["adapter"]["text"] == with_a and cmp["base"]["text"] == base_text
        assert cmp["adapter"]["stats"]["tokens_per_s"] > 0 and cmp["base"]["stats"]["tokens_per_s"] > 0
        bad = http.post(f"/api/inference/models/{BUNDLED}/swap-adapter", json={"adapter": "no-such-adapter"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "adapter"
        outside = http.post(f"/api/inference/models/{BUNDLED}/swap-adapter", json={"adapter": "/no/such/adapter"})
        assert outside.status_code == 403 and outside.json()["error"]["param"] == "adapter"
    finally:
        http.post(f"/api/inference/models/{BUNDLED}/swap-adapter", json={"adapter": None})
    assert http.post("/api/inference/generate", json=base_body).json()["text"] == base_text


def test_websocket_streams_tokens_and_stops(server) -> None:  # type: ignore[no-untyped-def]
    url = server.url.replace("http://", "ws://") + "/api/inference/stream"
    request = {"model": "default", "messages": FRANCE, "params": {"temperature": 0, "max_tokens": 8, "top_logprobs": 2}}
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps(request))
        msgs = []
        while True:
            msg = json.loads(ws.recv(timeout=60))
            msgs.append(msg)
            if msg.get("done"):
                break
    tokens = [m for m in msgs if m["type"] == "token"]
    assert tokens and all(t["logprob"] <= 0 and len(t["top"]) == 2 for t in tokens)
    assert "Paris" in msgs[-1]["text"] and msgs[-1]["stats"]["tokens_per_s"] > 0

    long_request = {"model": "default", "prompt": "Once upon a time", "params": {"temperature": 0.8, "max_tokens": 500}}
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps(long_request))
        for _ in range(3):
            assert json.loads(ws.recv(timeout=60))["type"] in ("start", "token")
        ws.send(json.dumps({"type": "stop"}))
        final = None
        while final is None:
            msg = json.loads(ws.recv(timeout=60))
            if msg.get("done"):
                final = msg
    assert final["finish_reason"] == "cancelled"
    assert final["usage"]["completion_tokens"] < 500


def test_websocket_bad_request_gets_an_error_message(server) -> None:  # type: ignore[no-untyped-def]
    url = server.url.replace("http://", "ws://") + "/api/inference/stream"
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps({"model": "default", "prompt": "hi", "params": {"top_p": 7}}))
        msg = json.loads(ws.recv(timeout=30))
    assert msg["error"]["param"] == "params.top_p"


def test_unload_and_reload(http: httpx.Client) -> None:
    r = http.post(f"/api/inference/models/{BUNDLED}/unload")
    assert r.status_code == 200
    assert BUNDLED not in [m["model"] for m in http.get("/api/inference/models/loaded").json()["models"]]
    body = {"model": "default", "messages": FRANCE, "params": {"temperature": 0, "max_tokens": 8}}
    assert "Paris" in http.post("/api/inference/generate", json=body).json()["text"]  # loads again on demand


def test_load_with_a_chosen_engine(http: httpx.Client) -> None:
    """The engine picked per load: the same model on llama.cpp next to transformers, each reported with why."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup)")
    r = http.post("/api/inference/load", json={"model": "default", "engine": "llamacpp"})
    assert r.status_code == 200, r.text
    assert r.json()["loaded"]["engine"] == "llamacpp"
    assert r.json()["loaded"]["engine_reason"] == "llamacpp requested by the load request"
    engines = {m["engine"] for m in http.get("/api/inference/models/loaded").json()["models"] if m["model"] == BUNDLED}
    assert "llamacpp" in engines
    bad = http.post("/api/inference/load", json={"model": "default", "engine": "tgi"})
    assert bad.status_code == 400 and "engine" in bad.text
    assert http.post(f"/api/inference/models/{BUNDLED}@llamacpp/unload").status_code == 200
