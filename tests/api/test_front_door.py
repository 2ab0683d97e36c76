"""The front door (studio/api/security.py) on the whole app -- Gradio UI and API, REST, WebSocket -- in process.

With a key set, the walker visits EVERY route the app has (FastAPI's, Gradio's mounted ones, every Gradio event by
``fn_index`` -- the private ones included -- and every ``api_name``), without the key, and expects 401 (403 for a
WebSocket handshake). Host and Origin rules, the login page and the body-size limits are checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from studio.auth import SESSION_COOKIE
from studio.settings import Settings

KEY = "front-door-key-5f2b9c"
BASE = "http://127.0.0.1:7860"
WS_BASE = "ws://127.0.0.1:7860"  # TestClient's websocket_connect ignores base_url: give it whole URLs
JSON = {"accept": "application/json"}
BEARER = {"authorization": f"Bearer {KEY}", **JSON}


def _app(tmp: Path, **settings: Any) -> tuple[Any, Any]:
    from app import create_app

    return create_app(Settings(home=tmp / "home", hf_cache=tmp / "hub", **settings))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    tmp = tmp_path_factory.mktemp("front-door")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio-tmp"))
    app, ctx = _app(tmp, api_key=KEY, max_body_bytes=64 * 1024, max_upload_bytes=256 * 1024)
    with TestClient(app, base_url=BASE, follow_redirects=False) as client:
        yield client, app
    ctx.close()
    mp.undo()


def _walk(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, method) for every route, mounted apps included; WebSockets as method 'WS'."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _walk(list(route.routes), prefix + route.path)
        elif isinstance(route, APIWebSocketRoute | WebSocketRoute):
            yield prefix + route.path, "WS"
        elif isinstance(route, APIRoute | Route):
            for method in sorted(route.methods or {"GET"}):
                if method not in ("HEAD", "OPTIONS"):
                    yield prefix + route.path, method


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path) or "/"


def test_every_route_needs_the_key(keyed: tuple[TestClient, Any]) -> None:
    client, app = keyed
    routes = sorted(set(_walk(list(app.routes))))
    assert len(routes) > 60, routes  # the walk reached Gradio's routes, not only the REST ones
    open_paths = {"/login", "/logout", "/health"}
    checked = 0
    for path, method in routes:
        if path in open_paths:
            continue
        url = _concrete(path)
        if method == "WS":
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(WS_BASE + url):
                pass
            assert closed.value.code == 4401, url
        else:
            r = client.request(method, url, headers=JSON, json={})
            assert r.status_code == 401, f"{method} {path} answered {r.status_code} without the key"
            assert r.json()["error"]["type"] == "authentication_error"
        checked += 1
    assert checked > 60


def test_every_gradio_event_needs_the_key(keyed: tuple[TestClient, Any]) -> None:
    client, _app = keyed
    config = client.get("/config", headers=BEARER)
    assert config.status_code == 200
    deps = config.json()["dependencies"]
    private = [d for d in deps if d.get("api_visibility") == "private" or not d.get("api_name")]
    assert len(deps) > 100 and private, "the config lists the UI's events, private ones included"
    for dep in deps:
        body = {"data": [], "fn_index": dep["id"], "session_hash": "attacker", "trigger_id": None}
        r = client.post("/gradio_api/queue/join", json=body, headers=JSON)
        assert r.status_code == 401, f"fn_index {dep['id']} ({dep.get('api_name')}) joined the queue without the key"
        name = dep.get("api_name")
        if isinstance(name, str) and name:
            for route in (f"/gradio_api/call/{name}", f"/gradio_api/run/{name}"):
                assert client.post(route, json={"data": []}, headers=JSON).status_code == 401, route
    # the same request with the key gets past the door (the check can fail)
    ok = client.post(
        "/gradio_api/queue/join",
        json={"data": [], "fn_index": deps[0]["id"], "session_hash": "owner", "trigger_id": None},
        headers=BEARER,
    )
    assert ok.status_code != 401


def test_upload_and_file_routes_need_the_key(keyed: tuple[TestClient, Any], tmp_path: Path) -> None:
    client, _app = keyed
    r = client.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}, headers=JSON)
    assert r.status_code == 401
    assert client.get("/gradio_api/file=/etc/passwd", headers=JSON).status_code == 401
    ok = client.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}, headers=BEARER)
    assert ok.status_code == 200 and ok.json()[0].endswith("a.txt")


def test_browser_is_sent_to_login_and_the_cookie_opens_every_surface(keyed: tuple[TestClient, Any]) -> None:
    client, _app = keyed
    page = client.get("/?view=api", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/%3Fview%3Dapi"
    form = client.get("/login")
    assert form.status_code == 200 and 'name="key"' in form.text
    wrong = client.post("/login", data={"key": "nope", "next": "/"})
    assert wrong.status_code == 401 and "Wrong key" in wrong.text
    assert SESSION_COOKIE not in wrong.cookies
    # an absolute "next" would be an open redirect: it is replaced by "/"
    right = client.post("/login", data={"key": KEY, "next": "https://evil.example/"})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.cookies[SESSION_COOKIE]
    client.cookies.clear()  # send cookies explicitly below
    set_cookie = right.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    jar = {SESSION_COOKIE: cookie}
    assert client.get("/config", headers=JSON, cookies=jar).status_code == 200
    assert client.get("/v1/models", headers=JSON, cookies=jar).status_code == 200
    assert client.get("/config", headers=JSON, cookies={SESSION_COOKIE: cookie + "x"}).status_code == 401
    out = client.get("/logout", cookies=jar)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    client.cookies.clear()


def test_health_says_only_ok_without_the_key(keyed: tuple[TestClient, Any]) -> None:
    client, _app = keyed
    assert client.get("/health").json() == {"status": "ok"}
    assert "version" in client.get("/health", headers=BEARER).json()


def test_websocket_with_the_key_is_accepted(keyed: tuple[TestClient, Any]) -> None:
    client, _app = keyed
    with client.websocket_connect(WS_BASE + "/api/inference/stream", headers={"authorization": f"Bearer {KEY}"}) as ws:
        ws.send_json({"model": "no/such-model-anywhere", "prompt": "hi"})
        reply = ws.receive_json()
    assert reply["error"]["code"] == "model_not_found"


# -- host and origin --------------------------------------------------------------------------------------------
def test_foreign_host_is_refused(keyed: tuple[TestClient, Any]) -> None:
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    client, _app = keyed
    r = client.get("/v1/models", headers={**BEARER, "host": "evil.example:7860"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    assert "STUDIO_ALLOWED_HOSTS" in r.json()["error"]["message"]
    for host in ("localhost:7860", "127.0.0.1:7860", "[::1]:7860"):
        assert client.get("/v1/models", headers={**BEARER, "host": host}).status_code == 200, host


def test_foreign_origin_is_refused_even_from_localhost(keyed: tuple[TestClient, Any]) -> None:
    """Gradio on its own allows any http://localhost:* origin with credentials; the studio allows only itself."""
    client, _app = keyed
    for origin in ("http://localhost:9999", "https://evil.example", "null"):
        r = client.post("/gradio_api/queue/join", json={}, headers={**BEARER, "origin": origin})
        assert r.status_code == 403, origin
        assert r.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect(
                WS_BASE + "/api/inference/stream", headers={"authorization": f"Bearer {KEY}", "origin": origin}
            ),
        ):
            pass
    same = client.get("/v1/models", headers={**BEARER, "origin": BASE})
    assert same.status_code == 200
    assert not any(h.startswith("access-control-") for h in same.headers)


def test_configured_origin_gets_cors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    app, ctx = _app(tmp_path, cors_origins="https://tools.example.com", allowed_hosts="studio.example.com")
    try:
        with TestClient(app, base_url="http://studio.example.com") as client:
            pre = client.options(
                "/v1/models",
                headers={"origin": "https://tools.example.com", "access-control-request-method": "GET"},
            )
            assert pre.status_code == 204
            assert pre.headers["access-control-allow-origin"] == "https://tools.example.com"
            r = client.get("/v1/models", headers={"origin": "https://tools.example.com"})
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "https://tools.example.com"
            assert r.headers["access-control-allow-credentials"] == "true"
            assert client.get("/v1/models", headers={"origin": "https://other.example.com"}).status_code == 403
    finally:
        ctx.close()


# -- body limits ------------------------------------------------------------------------------------------------
def test_large_body_is_refused_before_it_is_read(keyed: tuple[TestClient, Any]) -> None:
    client, _app = keyed
    big = '{"model": "default", "messages": [{"role": "user", "content": "' + "a" * 70_000 + '"}]}'
    r = client.post("/v1/chat/completions", content=big, headers={**BEARER, "content-type": "application/json"})
    assert r.status_code == 413
    err = r.json()["error"]
    assert (
        err["code"] == "request_too_large" and "STUDIO_MAX_BODY_BYTES" in err["message"] and "64 KiB" in err["message"]
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        for _ in range(100):
            yield b"a" * 1024

    r = client.post("/v1/chat/completions", content=chunks(), headers={**BEARER, "content-type": "application/json"})
    assert r.status_code == 413
    # a body under the limit still reaches the route (which names the bad field)
    ok = client.post("/v1/chat/completions", json={"model": "default"}, headers=BEARER)
    assert ok.status_code == 400 and ok.json()["error"]["param"] == "messages"


def test_large_upload_is_refused_and_leaves_no_file(keyed: tuple[TestClient, Any], tmp_path: Path) -> None:
    client, _app = keyed
    folder = Path(__import__("os").environ["GRADIO_TEMP_DIR"])

    def files_now() -> set[Path]:
        return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()

    before = files_now()
    # over the limit by far: refused by its Content-Length before a byte is read
    r = client.post("/gradio_api/upload", files={"files": ("big.bin", b"x" * (400 * 1024))}, headers=BEARER)
    assert r.status_code == 413
    assert "STUDIO_MAX_UPLOAD_BYTES" in r.json()["error"]["message"]
    # just over: Gradio stops it while it streams in and deletes the partial file
    r = client.post("/gradio_api/upload", files={"files": ("big.bin", b"x" * (270 * 1024))}, headers=BEARER)
    assert r.status_code == 413
    assert files_now() == before, "a refused upload left a file behind"


def test_share_link_host_is_allowed_once_known(tmp_path: Path) -> None:
    """--share: the tunnel's host name (only known once the link exists) passes the Host check."""
    from app import allow_share_host
    from studio.auth import host_allowed

    settings = Settings(home=tmp_path / "home", api_key=KEY, allowed_hosts="studio.lan")
    assert not host_allowed(settings, "abc123.gradio.live")
    assert allow_share_host(settings, "https://abc123.gradio.live") == "abc123.gradio.live"
    assert host_allowed(settings, "abc123.gradio.live") and host_allowed(settings, "studio.lan:7860")
