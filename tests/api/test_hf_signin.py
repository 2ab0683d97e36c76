"""Sign in with Hugging Face on a Space (issue 19, point 2). The Hub is not reachable here, so the OAuth dance
itself cannot run; what the studio adds on top of Gradio's OAuth is tested with the real pieces: the ``session``
cookie exactly as Gradio's callback leaves it (Starlette's ``SessionMiddleware`` with the key ``attach_oauth``
derives from ``OAUTH_CLIENT_SECRET``, ``request.session["oauth_info"] = ...``), mapped onto studio users -- an
admin when named in ``STUDIO_HF_ADMINS``, else a member -- and the whole app started as a Space with
``hf_oauth: true`` starts it (``SPACE_ID``, ``SYSTEM=spaces``, the four ``OAUTH_*`` variables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import ROOT

SPACE_ENV = {
    "SPACE_ID": "team/whetstone",
    "SYSTEM": "spaces",
    "SPACE_HOST": "team-whetstone.hf.space",
    "OAUTH_CLIENT_ID": "client-id-123",
    "OAUTH_CLIENT_SECRET": "client-secret-456",
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "https://huggingface.co",
}


def gradio_oauth_cookie(username: str, *, expires_in: float = 3600, secret: str | None = None) -> str:
    """The ``session`` cookie Gradio's ``/login/callback`` leaves, made by Starlette's own middleware."""
    from studio.users.service import hf_session_secret

    def callback(request: Request) -> PlainTextResponse:
        request.session["oauth_info"] = {
            "access_token": "hf_oauth_token",
            "expires_at": time.time() + expires_in,
            "userinfo": {"preferred_username": username, "name": username.title()},
        }
        return PlainTextResponse("ok")

    key = secret if secret is not None else hf_session_secret()
    app = Starlette(
        routes=[Route("/login/callback", callback)],
        middleware=[Middleware(SessionMiddleware, secret_key=key, same_site="none", https_only=True)],
    )
    with TestClient(app, base_url="https://testserver") as client:
        return str(client.get("/login/callback").cookies["session"])


def test_cookie_of_gradio_oauth_names_the_hf_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.users.service import hf_username_of

    for name, value in SPACE_ENV.items():
        monkeypatch.setenv(name, value)
    assert hf_username_of(gradio_oauth_cookie("Ada-Lovelace")) == "Ada-Lovelace"
    assert hf_username_of(gradio_oauth_cookie("ada", expires_in=-10)) is None  # the OAuth token expired
    assert hf_username_of(gradio_oauth_cookie("ada", secret="another-space")) is None  # signed by someone else
    assert hf_username_of("not-a-cookie") is None


SPACE_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from fastapi.testclient import TestClient
from studio.settings import Settings
from app import create_app

home = Path(sys.argv[1])
cookies = json.loads(sys.argv[2])
app, ctx = create_app(Settings(home=home, hf_cache=home / "hub", hf_admins="Ada-Lovelace"))
out = {}
with TestClient(app, base_url="https://team-whetstone.hf.space", follow_redirects=False) as client:
    out["anonymous"] = client.get("/config", headers={"accept": "application/json"}).status_code
    login = client.get("/login")
    out["login_offers_hf"] = "Sign in with Hugging Face" in login.text and 'href="/login/huggingface"' in login.text
    for who, cookie in cookies.items():
        client.cookies.clear()
        client.cookies.set("session", cookie)
        config = client.get("/config", headers={"accept": "application/json"})
        out[who] = config.status_code
        if who == "ada":
            out["login_button"] = any(
                (c.get("props") or {}).get("elem_id") == "studio-hf-login" for c in config.json()["components"]
            )
        if who == "bob":
            out["bob_models_pull"] = client.post("/api/models/pull", json={"repo_id": "x/y"}).status_code
    out["users"] = {u.name: [u.role, u.hf_username] for u in ctx.users.list()}
    out["audit"] = [(e.action, e.actor, e.target) for e in ctx.users.audit_log()]
ctx.close()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_space_with_hf_oauth_maps_signed_in_people_onto_users(tmp_path: Path) -> None:
    env = {**os.environ, **SPACE_ENV, "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio-tmp")}
    env.pop("STUDIO_API_KEY", None)
    env.pop("STUDIO_HOME", None)
    old = {k: os.environ.get(k) for k in SPACE_ENV}
    os.environ.update({k: v for k, v in SPACE_ENV.items() if k == "OAUTH_CLIENT_SECRET"})
    try:
        cookies = {"ada": gradio_oauth_cookie("Ada-Lovelace"), "bob": gradio_oauth_cookie("bob")}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    run = subprocess.run(
        [sys.executable, "-c", SPACE_SCRIPT, str(tmp_path / "home"), json.dumps(cookies)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, run.stderr[-3000:]
    out = json.loads(line[len("RESULT ") :])
    assert out["anonymous"] == 401  # a Space with OAuth asks for a user before anyone has signed in
    assert out["login_offers_hf"]
    assert out["ada"] == 200 and out["bob"] == 200
    assert out["login_button"]  # Gradio's LoginButton: its presence makes Gradio add the OAuth routes
    assert out["users"] == {"ada-lovelace": ["admin", "Ada-Lovelace"], "bob": ["member", "bob"]}
    assert out["bob_models_pull"] == 403  # a member may not download models
    assert ("user.add", "huggingface", "ada-lovelace") in [tuple(a) for a in out["audit"]]
