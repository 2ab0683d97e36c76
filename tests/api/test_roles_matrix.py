"""The role matrix at the front door (issue 19), in process on the whole app with three users -- an admin, a member
and a viewer, each with a personal API token:

- every Gradio event (by ``fn_index`` on the queue, and by ``api_name`` on ``/gradio_api/call``) answers 403 to a
  role exactly when ``components.permissions`` says the role may not run it;
- every REST route under ``/v1`` and ``/api`` answers 403 exactly when ``studio.users.roles.rest_permission`` says so;
- without credentials everything answers 401 (users mode, no ``STUDIO_API_KEY``);
- the login form signs a user in, refuses a wrong password and pauses after too many failures;
- the OpenAI SDK works with a viewer's token until the token is revoked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from components.permissions import permission_of
from studio.auth import SESSION_COOKIE
from studio.settings import Settings
from studio.users.roles import allows, rest_permission
from tests.api.test_front_door import _concrete, _walk

BASE = "http://127.0.0.1:7860"
WS_BASE = "ws://127.0.0.1:7860"  # TestClient's websocket_connect ignores base_url: give it whole URLs
JSON = {"accept": "application/json"}
PASSWORDS = {"root": "root password 1", "mia": "member password 2", "val": "viewer password 3"}
ROLE_OF = {"admin": "root", "member": "mia", "viewer": "val"}
MAX_FAILURES = 2
EXAMPLES = frozenset(  # joined with the session hash the UI sends: these few events really run (and fail: no data)
    [
        "playground_generate",
        "aliases_save",
        "compare_vote",
        "finetune_submit",
        "models_pull",
        "deploy_start",
        "users_add",
    ]
)


@dataclass
class Studio:
    client: TestClient
    app: Any
    ctx: Any
    tokens: dict[str, str]  # role -> plain token
    token_ids: dict[str, str]  # role -> token id

    def auth(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[role]}", **JSON}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    from app import create_app

    tmp = tmp_path_factory.mktemp("roles")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio-tmp"))
    for name in ("STUDIO_API_KEY", "STUDIO_ADMIN_USER", "STUDIO_ADMIN_PASSWORD", "OAUTH_CLIENT_ID", "SPACE_ID"):
        mp.delenv(name, raising=False)
    app, ctx = create_app(
        Settings(home=tmp / "home", hf_cache=tmp / "hub", api_key=None, signin_max_failures=MAX_FAILURES)
    )
    tokens: dict[str, str] = {}
    token_ids: dict[str, str] = {}
    for role, name in ROLE_OF.items():
        ctx.users.add(name, role=role, password=PASSWORDS[name])
        tokens[role], info = ctx.users.create_token(name, "tests")
        token_ids[role] = info.id
    with TestClient(app, base_url=BASE, follow_redirects=False) as client:
        yield Studio(client, app, ctx, tokens, token_ids)
    ctx.close()
    mp.undo()


def _deps(studio: Studio) -> list[dict[str, Any]]:
    config = studio.client.get("/config", headers=studio.auth("admin"))
    assert config.status_code == 200
    deps: list[dict[str, Any]] = config.json()["dependencies"]
    assert len(deps) > 100
    return deps


def _join(studio: Studio, fn_index: int, headers: dict[str, str], *, run: bool = False) -> Any:
    """Join the queue for event ``fn_index``. ``run=False`` leaves out the session hash: past the door Gradio then
    answers 400 at once instead of running the event (running some 300 events per role takes minutes)."""
    body = {"data": [], "fn_index": fn_index, "session_hash": "x" if run else None, "trigger_id": None}
    return studio.client.post("/gradio_api/queue/join", json=body, headers=headers)


def _call(studio: Studio, api_name: str, headers: dict[str, str], *, run: bool = False) -> Any:
    """POST /gradio_api/call/<api_name>; ``run=False`` sends ``data: null``, which Gradio refuses (422) unrun."""
    return studio.client.post(f"/gradio_api/call/{api_name}", json={"data": [] if run else None}, headers=headers)


def _forbidden(response: Any) -> bool:
    if response.status_code != 403:
        return False
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "forbidden"), error
    return True


# -- (a) every Gradio event x role -------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_every_gradio_event_on_the_queue_follows_the_role_table(studio: Studio, role: str) -> None:
    headers = studio.auth(role)
    wrong: list[str] = []
    refused = 0
    for dep in _deps(studio):
        name = dep.get("api_name")
        needed = permission_of(name if isinstance(name, str) else None)
        r = _join(studio, dep["id"], headers)
        expected = 400 if allows(role, needed) else 403  # 400: past the door, Gradio's own "no session hash"
        if r.status_code != expected or (expected == 403 and not _forbidden(r)):
            wrong.append(f"fn_index {dep['id']} ({name}, needs {needed.value}): {r.status_code}")
        refused += r.status_code == 403
    assert not wrong, f"{role}: " + "; ".join(wrong)
    if role == "admin":
        assert refused == 0
    else:
        assert refused > 0, f"no event is closed to a {role}"


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_every_gradio_api_name_follows_the_role_table(studio: Studio, role: str) -> None:
    headers = studio.auth(role)
    names = sorted({d["api_name"] for d in _deps(studio) if isinstance(d.get("api_name"), str) and d["api_name"]})
    wrong: list[str] = []
    for name in names:
        needed = permission_of(name)
        expected = 422 if allows(role, needed) else 403  # 422: past the door, Gradio's own body check
        for door in ("call", "run"):
            r = studio.client.post(f"/gradio_api/{door}/{name}", json={"data": None}, headers=headers)
            if r.status_code != expected or (expected == 403 and not _forbidden(r)):
                wrong.append(f"/{door}/{name} (needs {needed.value}): {r.status_code}")
    assert not wrong, f"{role}: " + "; ".join(wrong)


# Gradio runs an event through more doors than /call and /run: /gradio_api/api/<name> (the same handler as /run),
# /gradio_api/call/v2/<name> (keyword arguments), and /run|/api with an "fn_index" in the body, which Gradio
# prefers to the name in the path. Each must be refused to a viewer for an admin event.
SIDE_DOORS = {
    "api": ("/gradio_api/api/models_pull", {"data": ["no-such-org/no-such-model", "", ""]}),
    "call_v2": ("/gradio_api/call/v2/models_pull", {"repo_id": "no-such-org/no-such-model", "rev": "", "wanted": ""}),
    "run_with_fn_index": ("/gradio_api/run/playground_generate", {"data": [], "fn_index": "models_pull"}),
    "api_with_fn_index": ("/gradio_api/api/playground_generate", {"data": [], "fn_index": "models_pull"}),
}


@pytest.mark.parametrize("door", sorted(SIDE_DOORS))
def test_no_side_door_runs_an_admin_event_for_a_viewer(studio: Studio, door: str) -> None:
    url, body = SIDE_DOORS[door]
    if body.get("fn_index") == "models_pull":
        body = {**body, "fn_index": next(d["id"] for d in _deps(studio) if d.get("api_name") == "models_pull")}
    r = studio.client.post(url, json=body, headers=studio.auth("viewer"))
    assert _forbidden(r), f"a viewer reached models_pull through {url}: {r.status_code} {r.text[:200]}"


def _status_by_name(studio: Studio, role: str) -> dict[str, int]:
    """api_name -> the queue's answer for ``role`` (the first event of that name)."""
    out: dict[str, int] = {}
    for dep in _deps(studio):
        name = dep.get("api_name")
        if isinstance(name, str) and name and name not in out:
            out[name] = _join(studio, dep["id"], studio.auth(role), run=name in EXAMPLES).status_code
    return out


def test_named_examples(studio: Studio) -> None:
    viewer = _status_by_name(studio, "viewer")
    assert viewer["playground_generate"] not in (401, 403), "a viewer may chat"
    for name in ("aliases_save", "compare_vote", "finetune_submit", "models_pull", "users_add"):
        if name in viewer:
            assert viewer[name] == 403, f"a viewer ran {name}"
    call = _call(studio, "aliases_save", studio.auth("viewer"), run=True)
    assert call.status_code == 403 and "val is a viewer" in call.json()["error"]["message"]

    member = _status_by_name(studio, "member")
    for name in ("models_pull", "deploy_start"):
        assert member[name] == 403, f"a member ran {name}"
    for name in ("finetune_submit", "playground_generate", "aliases_save"):
        assert member[name] not in (401, 403), f"a member may run {name}"

    admin = _status_by_name(studio, "admin")
    assert not [n for n, status in admin.items() if status in (401, 403)]


# -- (b) every REST route x role ---------------------------------------------------------------------------------
def _rest_routes(studio: Studio) -> list[tuple[str, str]]:
    routes = sorted(
        (path, method)
        for path, method in set(_walk(list(studio.app.routes)))
        if method != "WS" and (path.startswith(("/v1/", "/api/")) or path in ("/v1", "/api"))
    )
    assert len(routes) > 20, routes
    return routes


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_every_rest_route_follows_the_role_table(studio: Studio, role: str) -> None:
    headers = studio.auth(role)
    wrong: list[str] = []
    refused = 0
    for path, method in _rest_routes(studio):
        url = _concrete(path)
        needed = rest_permission(method, url)
        r = studio.client.request(method, url, headers=headers, json={})
        assert r.status_code != 401, f"{role}: {method} {url} answered 401"
        if _forbidden(r) == allows(role, needed):
            wrong.append(f"{method} {url} (needs {needed.value}): {r.status_code}")
        refused += r.status_code == 403
    assert not wrong, f"{role}: " + "; ".join(wrong)
    assert (refused == 0) == (role == "admin")


def test_rest_named_examples(studio: Studio) -> None:
    viewer, member = studio.auth("viewer"), studio.auth("member")
    assert studio.client.get("/v1/models", headers=viewer).status_code == 200
    chat = studio.client.post("/v1/chat/completions", json={"model": "default"}, headers=viewer)
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"  # past the door: the route spoke
    assert studio.client.get("/api/models/deployments", headers=viewer).status_code == 200
    assert _forbidden(studio.client.post("/api/models/deployments", json={}, headers=member))
    assert _forbidden(studio.client.post("/api/models/exports", json={}, headers=viewer))


def test_viewer_may_open_the_inference_websocket(studio: Studio) -> None:
    headers = {"authorization": f"Bearer {studio.tokens['viewer']}"}
    with studio.client.websocket_connect(WS_BASE + "/api/inference/stream", headers=headers) as ws:
        ws.send_json({"model": "no/such-model-anywhere", "prompt": "hi"})
        reply = ws.receive_json()
    assert reply["error"]["code"] == "model_not_found"  # accepted: the route itself answered


# -- (c) no credentials ------------------------------------------------------------------------------------------
def test_without_credentials_everything_is_401(studio: Studio) -> None:
    client = studio.client
    client.cookies.clear()
    routes = sorted(set(_walk(list(studio.app.routes))))
    assert len(routes) > 60
    checked = 0
    for path, method in routes:
        if path in ("/login", "/logout", "/health"):
            continue
        url = _concrete(path)
        if method == "WS":
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(WS_BASE + url):
                pass
            assert closed.value.code == 4401, url
        else:
            for headers in (JSON, {**JSON, "authorization": "Bearer wst_not-a-real-token"}):
                r = client.request(method, url, headers=headers, json={})
                assert r.status_code == 401, f"{method} {path} answered {r.status_code} without credentials"
                assert r.json()["error"]["type"] == "authentication_error"
        checked += 1
    assert checked > 60
    for dep in _deps(studio):
        assert _join(studio, dep["id"], JSON).status_code == 401, dep.get("api_name")
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


# -- (d) the login form ------------------------------------------------------------------------------------------
def test_login_form_signs_in_refuses_and_pauses(studio: Studio) -> None:
    client = studio.client
    client.cookies.clear()
    form = client.get("/login")
    assert form.status_code == 200 and 'id="username"' in form.text and 'name="password"' in form.text

    right = client.post("/login", data={"username": "val", "password": PASSWORDS["val"], "next": "/"})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.cookies[SESSION_COOKIE]
    assert cookie.startswith("u.") and "HttpOnly" in right.headers["set-cookie"]
    client.cookies.clear()  # send the cookie explicitly
    assert client.get("/config", headers=JSON).status_code == 401
    assert client.get("/config", headers=JSON, cookies={SESSION_COOKIE: cookie}).status_code == 200
    # the session carries the viewer's role
    save = client.post(
        "/gradio_api/call/aliases_save", json={"data": []}, headers=JSON, cookies={SESSION_COOKIE: cookie}
    )
    assert save.status_code == 403

    for _ in range(MAX_FAILURES):
        wrong = client.post("/login", data={"username": "val", "password": "not the password", "next": "/"})
        assert wrong.status_code == 401 and 'id="login-error"' in wrong.text
        assert SESSION_COOKIE not in wrong.cookies
    paused = client.post("/login", data={"username": "val", "password": PASSWORDS["val"], "next": "/"})
    assert paused.status_code == 429 and 'id="login-error"' in paused.text
    assert int(paused.headers["retry-after"]) > 0
    assert SESSION_COOKIE not in paused.cookies
    actions = [e.action for e in studio.ctx.users.audit_log(action="signin.")]
    assert actions.count("signin.failed") == MAX_FAILURES and "signin.limited" in actions
    client.cookies.clear()


# -- (e) the OpenAI SDK ------------------------------------------------------------------------------------------
def test_openai_sdk_with_a_viewer_token_until_it_is_revoked(studio: Studio) -> None:
    openai = pytest.importorskip("openai")
    from studio.auth import Principal

    studio.client.cookies.clear()
    ctx = studio.ctx
    plain, info = ctx.users.create_token("val", "sdk")
    sdk = openai.OpenAI(base_url=f"{BASE}/v1", api_key=plain, http_client=studio.client, max_retries=0)
    ids = [m.id for m in sdk.models.list()]
    assert ids, "the viewer sees the models"
    val = ctx.users.get("val")
    ctx.users.revoke_token(info.id, by=Principal("val", "token", role="viewer", user_id=val.id))
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    # the viewer's other token still works
    other = openai.OpenAI(base_url=f"{BASE}/v1", api_key=studio.tokens["viewer"], http_client=studio.client)
    assert [m.id for m in other.models.list()] == ids


def test_admin_actions_are_audited_and_reads_are_not(studio: Studio) -> None:
    client, ctx = studio.client, studio.ctx
    deps = client.get("/config", headers=studio.auth("admin")).json()["dependencies"]
    index = {d["api_name"]: d["id"] for d in deps}
    before = {e.id for e in ctx.users.audit_log(1000)}
    body = {"data": [], "fn_index": index["models_delete"], "trigger_id": None}  # no session: refused by Gradio
    client.post("/gradio_api/queue/join", json=body, headers=studio.auth("admin"))
    client.delete("/api/models/no-such-model", headers=studio.auth("admin"))
    client.post(
        "/gradio_api/queue/join", json={**body, "fn_index": index["list_aliases"]}, headers=studio.auth("admin")
    )
    client.get("/api/models", headers=studio.auth("admin"))
    new = [(e.actor, e.action, e.target) for e in ctx.users.audit_log(1000) if e.id not in before]
    assert ("root", "admin.models_delete", "") in new
    assert ("root", "admin.DELETE", "/api/models/no-such-model") in new
    assert len(new) == 2, new  # reading and a member-level event leave no admin row
