"""The Account tab (issue 19) through `gradio_client` against the whole app served by uvicorn: a user's own API
tokens (made, used, revoked), the admins' Users panel, and the front door's 403 for a viewer who tries it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from studio.settings import Settings
from tests.api.live_server import live_server

pytestmark = pytest.mark.slow

ADA_PASSWORD = "ada-password-123"
VIC_PASSWORD = "vic-password-456"


@contextmanager
def studio(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    from app import create_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio-tmp"))
    app, ctx = create_app(Settings(home=tmp / "home", hf_cache=tmp / "hub"))
    try:
        with live_server(app, lifespan="on", graceful_s=2) as url:
            yield url, ctx
    finally:
        ctx.close()


@dataclass
class Team:
    url: str
    ctx: Any
    ada_token: str
    vic_token: str

    def client(self, token: str) -> Client:
        return Client(self.url, verbose=False, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """A studio with users: the admin ada and the viewer vic, each with a personal API token."""
    mp = pytest.MonkeyPatch()
    with studio(tmp_path_factory.mktemp("account"), mp) as (url, ctx):
        ctx.users.add("ada", role="admin", password=ADA_PASSWORD)
        ctx.users.add("vic", role="viewer", password=VIC_PASSWORD)
        ada_token, _ = ctx.users.create_token("ada", "test-suite")
        vic_token, _ = ctx.users.create_token("vic", "test-suite")
        yield Team(url, ctx, ada_token, vic_token)
    mp.undo()


def _rows(table: Any) -> list[list[Any]]:
    """A Dataframe output as gradio_client returns it (``{"headers", "data"}``)."""
    return [list(r) for r in table["data"]] if isinstance(table, dict) else [list(r) for r in table]


def _models(url: str, token: str) -> int:
    return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def test_a_token_made_in_the_tab_opens_the_api_until_it_is_revoked(team: Team) -> None:
    ada = team.client(team.ada_token)
    plain, table, name_box = ada.predict("notebook", api_name="/account_token_create")
    token = plain["value"] if isinstance(plain, dict) else plain
    assert token.startswith("wst_") and name_box == ""
    row = next(r for r in _rows(table) if r[0] == "notebook")
    assert row[4] == "active" and token.startswith(row[1].rstrip("…"))
    assert _models(team.url, token) == 200

    listed = _rows(ada.predict(api_name="/account_tokens"))
    assert {r[0] for r in listed} == {"notebook", "test-suite"}  # ada's own tokens, not vic's
    table, id_box = ada.predict(row[5], api_name="/account_token_revoke")
    assert next(r for r in _rows(table) if r[5] == row[5])[4].startswith("revoked") and id_box == ""
    assert _models(team.url, token) == 401
    assert _models(team.url, team.ada_token) == 200  # the other token still works


def test_an_admin_adds_a_user_and_manages_them(team: Team) -> None:
    ada = team.client(team.ada_token)
    users, audit, password_box = ada.predict("bea", "member", "bea-password-789", api_name="/users_add")
    assert [r[:3] for r in _rows(users)] == [  # sorted by name
        ["ada", "admin", "password"],
        ["bea", "member", "password"],
        ["vic", "viewer", "password"],
    ]
    assert password_box == ""
    assert ["bea", "member"] in [r[:2] for r in _rows(ada.predict(api_name="/users_list"))]
    assert team.ctx.users.sign_in("bea", "bea-password-789").role == "member"
    newest = _rows(audit)[0]
    assert newest[1:4] == ["user.add", "ada", "bea"] and newest[4] == "127.0.0.1"

    users, _audit = ada.predict("bea", "viewer", api_name="/users_role")
    assert ["bea", "viewer"] in [r[:2] for r in _rows(users)]
    ada.predict("bea", "another-password-1", api_name="/users_passwd")
    assert team.ctx.users.sign_in("bea", "another-password-1").name == "bea"

    with pytest.raises(AppError, match="tick 'Yes, remove'"):
        ada.predict("bea", False, api_name="/users_remove")
    users, _audit, confirm = ada.predict("bea", True, api_name="/users_remove")
    assert "bea" not in [r[0] for r in _rows(users)] and confirm is False
    actions = [r[1] for r in _rows(ada.predict("user.", api_name="/users_audit"))]
    assert actions[:4] == ["user.rm", "user.passwd", "user.role", "user.add"]  # newest first

    shown, _tokens, users, _audit = ada.predict(api_name="/account_show")
    assert "Signed in as **ada** (admin)" in shown
    assert {"ada", "vic"} <= {r[0] for r in _rows(users)}


def test_a_viewer_sees_their_account_but_not_the_users_panel(team: Team) -> None:
    vic = team.client(team.vic_token)
    shown, tokens, users, audit = vic.predict(api_name="/account_show")
    assert "Signed in as **vic** (viewer)" in shown
    assert [r[0] for r in _rows(tokens)] == ["test-suite"]
    assert _rows(users) == [] and _rows(audit) == []  # nothing of the admin panel reaches a viewer
    for api_name, args in [("/users_list", ()), ("/users_add", ("eve", "admin", "eve-password-1"))]:
        with pytest.raises(httpx.HTTPStatusError) as refused:  # the queue's join answered 403
            vic.predict(*args, api_name=api_name)
        assert refused.value.response.status_code == 403
    assert "eve" not in [u.name for u in team.ctx.users.list()]
    # the same event, as the raw Gradio HTTP API: the front door's 403 in the OpenAI error shape
    r = httpx.post(
        f"{team.url}/gradio_api/call/users_list",
        json={"data": []},
        headers={"Authorization": f"Bearer {team.vic_token}"},
        timeout=30,
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_a_single_user_studio_says_tokens_need_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with studio(tmp_path, monkeypatch) as (url, _ctx):
        client = Client(url, verbose=False)
        shown = client.predict(api_name="/account_show")[0]
        assert "single-user studio" in shown
        with pytest.raises(AppError, match="API tokens belong to users"):
            client.predict("notebook", api_name="/account_token_create")


def test_a_member_hides_their_dataset_and_job_from_the_team(team: Team) -> None:
    """Datasets and jobs are shared read-only with the team; their owner may make them private (issue 19)."""
    import json as _json

    from studio.jobs import queue
    from studio.users.acting import acting_as

    ctx = team.ctx
    mel = ctx.users.add("mel", role="member", password="mel-password-1")
    ctx.users.add("max", role="member", password="max-password-2")
    mel_token, _ = ctx.users.create_token("mel", "t")
    max_token, _ = ctx.users.create_token("max", "t")
    rows = "".join(_json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(12)).encode()
    from studio.auth import Principal

    with acting_as(Principal("mel", "token", role="member", user_id=mel.id)):
        ctx.datasets.import_upload("mels-notes", rows, "notes.jsonl")
        job = queue.submit(ctx.db, "selftest", {"steps": 1})

    def dataset_names(token: str) -> set[str]:
        _html, cards = team.client(token).predict(api_name="/finetune_datasets")
        return {c["name"] for c in cards}

    assert "mels-notes" in dataset_names(team.vic_token)  # shared read-only
    with pytest.raises(AppError, match="belongs to mel"):
        team.client(max_token).predict("mels-notes", api_name="/finetune_dataset_private")
    status, _html, _cards = team.client(mel_token).predict("mels-notes", api_name="/finetune_dataset_private")
    assert "private" in status
    assert "mels-notes" not in dataset_names(team.vic_token) and "mels-notes" not in dataset_names(max_token)
    assert "mels-notes" in dataset_names(team.ada_token)  # admins see everything

    with pytest.raises(AppError, match="belongs to mel"):
        team.client(max_token).predict(job.id, api_name="/finetune_private")
    status, _view = team.client(mel_token).predict(job.id, api_name="/finetune_private")
    assert "private" in status
    with pytest.raises(AppError, match="not found"):  # now max does not even see it
        team.client(max_token).predict(job.id, api_name="/finetune_private")
    # an alias the same way (its YAML names the owner)
    from studio.aliases.schema import AliasConfig

    with acting_as(Principal("mel", "token", role="member", user_id=mel.id)):
        ctx.engines.resolver.store.save(AliasConfig(alias="mel:chat", repo="default"))
    with pytest.raises(AppError, match="belongs to mel"):
        team.client(max_token).predict("mel:chat", api_name="/aliases_private")
    _table, _stats, details = team.client(mel_token).predict("mel:chat", api_name="/aliases_private")
    assert "owner: mel" in details and "private: true" in details
    with acting_as(Principal("max", "token", role="member", user_id="max")):
        assert ctx.engines.resolver.store.get("mel:chat") is None

    refused = httpx.post(
        f"{team.url}/gradio_api/call/finetune_private",
        json={"data": [job.id]},
        headers={"Authorization": f"Bearer {team.vic_token}"},
    )
    assert refused.status_code == 403  # a viewer changes nothing
