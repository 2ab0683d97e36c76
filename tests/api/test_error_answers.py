"""Issue 14, finding 6 and the low findings: no 5xx from user input (a lone surrogate, a body that is not UTF-8),
every error in OpenAI's shape, a server bug answered without a traceback and without dropping the keep-alive
connection, clean WebSocket refusals, a 400 for an unknown quantization, and an /openapi.json that documents the
400s (not 422) the API really sends. In-process app with a fake engine, or a real uvicorn where connections matter."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from studio.api.server import create_api
from studio.context import AppContext
from studio.errors import ValidationError
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.api.fake_engine import SlowFakeEngine, serve_fake
from tests.api.live_server import live_server, raw_request
from tests.api.test_limits import error_of


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[TestClient, AppContext, SlowFakeEngine]]:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub"))
    fake = serve_fake(ctx)
    with TestClient(create_api(ctx)) as client:
        yield client, ctx, fake
    ctx.close()


def _post_raw(client: TestClient, path: str, raw: bytes) -> Any:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def test_a_lone_surrogate_anywhere_is_a_400_not_a_500(studio: Any) -> None:
    client, ctx, fake = studio
    cases = [
        ("/v1/chat/completions", b'{"model":"default","messages":[{"role":"user","content":"\\ud800"}]}', None),
        ("/v1/chat/completions", b'{"model":"\\ud800","messages":[{"role":"user","content":"hi"}]}', "model"),
        ("/v1/completions", b'{"model":"default","prompt":"a\\udfffb"}', "prompt"),
        ("/v1/completions", b'{"model":"default","prompt":"hi","stop":["\\ud83d"]}', "stop.0"),
        ("/api/inference/generate", b'{"model":"default","messages":[{"role":"user","content":"\\ud800"}]}', None),
        ("/api/inference/load", b'{"model":"\\udc80"}', "model"),
        (
            "/api/inference/conversation/save",
            b'{"model":"default","messages":[{"role":"user","content":"\\ud800"}]}',
            "messages.0.content",
        ),
    ]
    for path, raw, param in cases:
        err = error_of(_post_raw(client, path, raw), 400, param)
        assert "surrogate" in err["message"], (path, err)
        if param is None:
            assert err["param"] in ("messages.0.content", "messages")
    # a proper pair of surrogates is just an emoji
    r = _post_raw(client, "/v1/completions", b'{"model":"default","prompt":"\\ud83d\\ude00","max_tokens":1}')
    assert r.status_code == 200
    assert [c["prompt"] for c in fake.calls] == ["\U0001f600"]
    # the core refuses it too (Gradio, CLI)
    with pytest.raises(ValidationError, match="surrogate"):
        ctx.engines.start_completion("default", "\ud800", make_sampling_params(max_tokens=1))


def test_a_body_that_is_not_utf8_gets_the_openai_error_shape(studio: Any) -> None:
    client, _ctx, _fake = studio
    err = error_of(_post_raw(client, "/v1/chat/completions", b'{"model":"default","messages":"\xff\xfe"}'), 400, "body")
    assert "UTF-8" in err["message"]
    err = error_of(_post_raw(client, "/v1/chat/completions", b'{"model": "default",'), 400, "body")
    assert "JSON" in err["message"]


def test_estimate_with_an_unknown_quantization_is_a_400(studio: Any) -> None:
    client, ctx, _fake = studio
    err = error_of(client.get("/api/inference/estimate", params={"model": "default", "quantization": "bogus"}), 400)
    assert err["param"] == "quantization" and "nf4" in err["message"]
    with pytest.raises(ValidationError, match="quantization"):
        ctx.engines.estimate("default", quantization="bogus")


def _ws_refusal(client: TestClient, send: Any) -> tuple[dict[str, Any], int]:
    with client.websocket_connect("/api/inference/stream") as ws:
        send(ws)
        message = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return message, closed.value.code


def test_websocket_answers_bad_frames_and_models_with_an_error_and_a_proper_close(studio: Any) -> None:
    client, _ctx, _fake = studio
    msg, code = _ws_refusal(client, lambda ws: ws.send_bytes(b"\x00\x01binary"))
    assert code == 1003 and msg["error"]["type"] == "invalid_request_error" and "text frame" in msg["error"]["message"]
    msg, code = _ws_refusal(client, lambda ws: ws.send_text("{not json"))
    assert code == 1007 and "JSON" in msg["error"]["message"]
    msg, code = _ws_refusal(client, lambda ws: ws.send_json({"model": "~nosuchuser", "prompt": "hi"}))
    assert code == 1008 and msg["error"]["param"] == "model"
    msg, code = _ws_refusal(client, lambda ws: ws.send_json({"model": "acme/none-such", "prompt": "hi"}))
    assert code == 1008 and msg["error"]["code"] == "model_not_found"
    msg, code = _ws_refusal(client, lambda ws: ws.send_text('{"model":"default","prompt":"\\ud800"}'))
    assert code == 1008 and "surrogate" in msg["error"]["message"]
    # and a good request still streams to the end
    with client.websocket_connect("/api/inference/stream") as ws:
        ws.send_json({"model": "default", "prompt": "hi", "params": {"max_tokens": 3}})
        kinds = []
        while True:
            m = ws.receive_json()
            kinds.append(m.get("type"))
            if m.get("done"):
                break
    assert kinds == ["start", "token", "token", "token", "done"]


def test_openapi_documents_400_in_openai_shape_not_422(studio: Any) -> None:
    client, _ctx, _fake = studio
    doc = client.get("/openapi.json").json()
    assert '"422"' not in json.dumps(doc)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["400"]["content"]["application/json"]["schema"] == ref
    assert {"400", "401", "404", "413", "429"} <= set(chat)
    assert "Retry-After" in chat["429"]["headers"]
    for path in ("/v1/completions", "/api/inference/generate", "/api/inference/compare"):
        assert {"400", "413", "429"} <= set(doc["paths"][path]["post"]["responses"]), path
    assert "401" in doc["paths"]["/v1/models"]["get"]["responses"]
    estimate = doc["paths"]["/api/inference/estimate"]["get"]
    assert "400" in estimate["responses"]
    quant = next(p for p in estimate["parameters"] if p["name"] == "quantization")
    assert quant["schema"]["enum"] == ["none", "int8", "int4", "nf4"]


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response (Content-Length framed) from ``sock``: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        body += chunk
    return int(head.split(b" ")[1]), body


def test_a_server_bug_is_a_500_in_openai_shape_and_keeps_the_connection(tmp_path: Path) -> None:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub"))
    app = create_api(ctx)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"secret detail under {tmp_path} in pid 4242")

    try:
        with live_server(app) as url, socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            port = int(url.rsplit(":", 1)[1])
            sock.settimeout(10)
            sock.sendall(raw_request(port, "GET", "/v1/boom"))
            status, body = _read_response(sock)
            assert status == 500
            err = json.loads(body)["error"]
            assert err["type"] == "server_error" and "reference" in err["message"]
            assert (
                str(tmp_path) not in body.decode() and "4242" not in body.decode() and "Traceback" not in body.decode()
            )
            # the same keep-alive connection answers the next request
            sock.sendall(raw_request(port, "GET", "/health"))
            status, body = _read_response(sock)
            assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        ctx.close()
