"""The vLLM route's per-token path (issue 18, point 3): the vLLM engine reads its server's SSE stream with the
standard library's HTTP client, the OpenAI routes build text chunks from a template, and both must give exactly
what the slower code gave. The engine runs for real here against a stand-in vLLM server (a small stdlib HTTP
server speaking vLLM's chunked SSE), started by the engine's own server command through STUDIO_VLLM_PYTHON."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.api.openai_routes import _MARK, _text_chunk_encoder
from studio.errors import StudioError, UserError
from studio.inference.base import ChatMessage, GenerationEnd, GenerationStart, TokenEvent
from studio.inference.params import make_sampling_params
from studio.inference.remote_backend import sse_payloads
from studio.inference.vllm_backend import VllmEngine, server_command, tensor_parallel_size

# Answers like vLLM's OpenAI server: chunked transfer encoding, one SSE event per token, a usage chunk, [DONE].
# The prompt "long" gets vLLM's 400 shape; "cut" closes the connection mid-stream.
STAND_IN = r"""
import argparse, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int)
ap.add_argument("--served-model-name")
args, _ = ap.parse_known_args()
WORDS = [" The", " capital", " of", " France", " is", " Paris", "."]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = json.dumps({"data": [{"id": args.served_model_name}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def event(self, payload):
        data = ("data: " + (payload if isinstance(payload, str) else json.dumps(payload)) + "\n\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if req["messages"][0]["content"] == "long":
            message = "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens."
            body = json.dumps({"error": {"message": message, "type": "BadRequestError", "param": "messages"}})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        n = min(req["max_tokens"], len(WORDS))
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": req["model"]}
        self.event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for i in range(n):
            if req["messages"][0]["content"] == "cut" and i == 2:
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            finish = ("length" if n < len(WORDS) else "stop") if i == n - 1 else None
            choice = {"index": 0, "delta": {"content": WORDS[i]}, "logprobs": None, "finish_reason": finish}
            self.event({**base, "choices": [choice]})
        self.event({**base, "choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": n}})
        self.event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")

ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
"""


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VllmEngine]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN, encoding="utf-8")
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    monkeypatch.setenv("STUDIO_VLLM_PYTHON", str(wrapper))
    model = tmp_path / "model"
    model.mkdir()
    e = VllmEngine("smol", model, log_dir=tmp_path / "logs", start_timeout=60)
    yield e
    e.unload()


def _run(engine: VllmEngine, prompt: str, max_tokens: int) -> list[object]:
    params = make_sampling_params(temperature=0, max_tokens=max_tokens)
    return list(engine.stream_chat([ChatMessage("user", prompt)], params, threading.Event()))


def test_vllm_stream_through_the_stdlib_client(engine: VllmEngine) -> None:
    items = _run(engine, "What is the capital of France?", 16)
    assert isinstance(items[0], GenerationStart) and items[0].prompt_tokens == 31  # from the usage chunk
    text = "".join(i.text for i in items if isinstance(i, TokenEvent))
    assert text == " The capital of France is Paris."
    assert isinstance(items[-1], GenerationEnd) and items[-1].finish_reason == "stop"
    short = _run(engine, "What is the capital of France?", 3)
    assert [i.text for i in short if isinstance(i, TokenEvent)] == [" The", " capital", " of"]
    assert isinstance(short[-1], GenerationEnd) and short[-1].finish_reason == "length"


def test_vllm_errors_keep_their_meaning(engine: VllmEngine) -> None:
    with pytest.raises(UserError, match="maximum context length is 2048 tokens") as caught:
        _run(engine, "long", 16)
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    with pytest.raises(StudioError, match="failed mid-stream"):  # connection dropped after two tokens
        _run(engine, "cut", 16)


def test_vllm_stream_stops_when_cancelled(engine: VllmEngine) -> None:
    cancel = threading.Event()
    params = make_sampling_params(temperature=0, max_tokens=16)
    seen: list[object] = []
    for item in engine.stream_chat([ChatMessage("user", "hi")], params, cancel):
        seen.append(item)
        if isinstance(item, TokenEvent):
            cancel.set()
    assert isinstance(seen[-1], GenerationEnd) and seen[-1].finish_reason == "cancelled"
    assert sum(isinstance(i, TokenEvent) for i in seen) == 1


def test_sse_payloads_split_across_pieces_and_line_ends() -> None:
    pieces = [b'data: {"a"', b': 1}\n\ndata: {"b": 2}\r\n', b"\r\n: comment\n\nevent: x\ndata: [DONE]"]
    assert list(sse_payloads(pieces)) == [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]


@pytest.mark.parametrize("text", ["Paris", " ", "", 'quote " and \\ backslash', "é😀\n\t", "\x00", _MARK[1:]])
def test_text_chunk_template_gives_the_same_bytes_as_json(text: str) -> None:
    def chunk(content: str) -> str:
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": 'alias "x"',
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None, "logprobs": None}],
            "usage": None,
        }
        return f"data: {json.dumps(payload)}\n\n"

    assert _text_chunk_encoder(chunk(_MARK))(text) == chunk(text)


def test_tensor_parallel_spans_the_gpus_asked_for() -> None:
    assert "--tensor-parallel-size" not in server_command(Path("/m"), "m", 1)
    assert "--tensor-parallel-size" not in server_command(Path("/m"), "m", 1, tensor_parallel=1)
    cmd = server_command(Path("/m"), "m", 1, tensor_parallel=4)
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "4"


@pytest.mark.parametrize(
    ("heads", "kv_heads", "gpus", "expected"),
    [(32, 8, 4, 4), (32, 8, 8, 8), (32, 8, 1, 1), (32, 8, 0, 1), (9, 3, 2, 1), (9, 3, 4, 3), (12, 4, 8, 4)],
)
def test_tensor_parallel_uses_the_gpus_the_heads_allow(
    tmp_path: Path, heads: int, kv_heads: int, gpus: int, expected: int
) -> None:
    """vLLM refuses a tensor-parallel size that does not divide the attention heads (SmolLM2-135M has 9)."""
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": heads, "num_key_value_heads": kv_heads}))
    assert tensor_parallel_size(tmp_path, gpus) == expected
