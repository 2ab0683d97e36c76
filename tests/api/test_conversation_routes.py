"""Saved conversations over REST (in-process FastAPI app, no model): save, open, list with filters, delete,
and OpenAI-shaped 400/404 errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
BASE = "/api/inference"


def _app(ctx: AppContext) -> FastAPI:
    return create_api(ctx)


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, hf_cache=tmp_path / "hub")


@pytest.fixture
def client(home: Settings) -> Iterator[TestClient]:
    ctx = AppContext.create(home)
    with TestClient(_app(ctx)) as c:
        yield c
    ctx.close()


def _save(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post(f"{BASE}/conversation/save", json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    err: dict[str, Any] = body["error"]
    return err


def test_round_trip_save_append_open_list_delete(client: TestClient) -> None:
    first = _save(
        client,
        model=MODEL,
        use_case="math",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Name a prime.", "params": {"temperature": 0.2, "max_tokens": 8}},
            {
                "role": "assistant",
                "content": "7",
                "stats": {"prompt_tokens": 20, "completion_tokens": 1, "finish_reason": "stop"},
            },
        ],
    )
    cid = first["id"]
    assert (first["title"], first["model"], first["use_case"], first["message_count"]) == (
        "Name a prime.",
        MODEL,
        "math",
        3,
    )
    assert first["created_at"].endswith("Z") or first["created_at"].endswith("+00:00")

    second = _save(
        client,
        conversation_id=cid,
        model=MODEL,
        messages=[{"role": "user", "content": "Another?"}, {"role": "assistant", "content": "11"}],
    )
    assert second["id"] == cid
    assert second["message_count"] == 5

    r = client.get(f"{BASE}/conversation/{cid}")
    assert r.status_code == 200
    opened = r.json()
    assert opened == second
    assert [(m["position"], m["role"], m["content"]) for m in opened["messages"]] == [
        (0, "system", "Be terse."),
        (1, "user", "Name a prime."),
        (2, "assistant", "7"),
        (3, "user", "Another?"),
        (4, "assistant", "11"),
    ]
    assert opened["messages"][1]["params"] == {"temperature": 0.2, "max_tokens": 8}
    assert opened["messages"][2]["stats"] == {"prompt_tokens": 20, "completion_tokens": 1, "finish_reason": "stop"}
    assert opened["messages"][3]["params"] == {}
    assert opened["messages"][3]["stats"] is None
    assert {m["model"] for m in opened["messages"]} == {MODEL}

    listed = client.get(f"{BASE}/conversations").json()
    assert listed["object"] == "list"
    assert [(c["id"], c["message_count"], c["title"]) for c in listed["data"]] == [(cid, 5, "Name a prime.")]
    assert "messages" not in listed["data"][0]

    r = client.delete(f"{BASE}/conversation/{cid}")
    assert r.status_code == 200
    assert r.json() == {"id": cid, "object": "conversation", "deleted": True}
    assert client.get(f"{BASE}/conversations").json()["data"] == []

    err = _error(client.get(f"{BASE}/conversation/{cid}"), 404)
    assert cid in err["message"]
    assert err["param"] == "conversation_id"
    assert err["code"] == "conversation_not_found"
    assert cid in _error(client.delete(f"{BASE}/conversation/{cid}"), 404)["message"]


def test_list_filters_by_model_and_use_case_newest_first(client: TestClient) -> None:
    turn = [{"role": "user", "content": "hi"}]
    a = _save(client, model="m1", use_case="chat", messages=turn)["id"]
    b = _save(client, model="m2", use_case="coding", messages=turn)["id"]
    c = _save(client, model="m1", use_case="coding", messages=turn)["id"]

    def ids(**query: Any) -> list[str]:
        r = client.get(f"{BASE}/conversations", params=query)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["data"]]

    assert ids() == [c, b, a]
    assert ids(model="m1") == [c, a]
    assert ids(use_case="coding") == [c, b]
    assert ids(model="m1", use_case="coding") == [c]
    assert ids(model="nothing") == []
    assert ids(limit=2) == [c, b]
    assert _error(client.get(f"{BASE}/conversations", params={"limit": 0}), 400)["param"] == "limit"


def test_empty_messages_is_a_400_naming_the_field(client: TestClient) -> None:
    err = _error(client.post(f"{BASE}/conversation/save", json={"model": MODEL, "messages": []}), 400)
    assert err["param"] == "messages"
    assert "messages" in err["message"]
    assert client.get(f"{BASE}/conversations").json()["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": " "}]},
            "messages.1.content",
        ),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi", "temprature": 1}]}, "messages.0.temprature"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "colour": "red"}, "colour"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi", "params": [1]}]}, "messages.0.params"),
    ],
)
def test_bad_save_is_a_400_naming_the_field_and_stores_nothing(
    client: TestClient, body: dict[str, Any], param: str
) -> None:
    err = _error(client.post(f"{BASE}/conversation/save", json=body), 400)
    assert err["param"] == param
    assert client.get(f"{BASE}/conversations").json()["data"] == []


def test_saving_to_an_unknown_conversation_is_a_404(client: TestClient) -> None:
    body = {"conversation_id": "f" * 32, "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    err = _error(client.post(f"{BASE}/conversation/save", json=body), 404)
    assert "f" * 32 in err["message"]
    assert client.get(f"{BASE}/conversations").json()["data"] == []


def test_conversations_survive_a_restart(home: Settings) -> None:
    ctx = AppContext.create(home)
    with TestClient(_app(ctx)) as c:
        cid = _save(c, model=MODEL, messages=[{"role": "user", "content": "remember me"}])["id"]
    ctx.close()
    ctx2 = AppContext.create(home)
    try:
        with TestClient(_app(ctx2)) as c:
            r = c.get(f"{BASE}/conversation/{cid}")
            assert r.status_code == 200
            assert [m["content"] for m in r.json()["messages"]] == ["remember me"]
    finally:
        ctx2.close()


def test_openapi_documents_the_four_routes_and_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths[f"{BASE}/conversation/save"]) == {"post"}
    assert set(paths[f"{BASE}/conversation/{{conversation_id}}"]) == {"get", "delete"}
    assert set(paths[f"{BASE}/conversations"]) == {"get"}
    assert paths[f"{BASE}/conversations"]["get"]["tags"] == ["Inference"]
    comps = schema["components"]["schemas"]
    assert {"ConversationSave", "MessageCreate", "ConversationDetail", "ConversationPublic", "MessagePublic"} <= set(
        comps
    )
    assert comps["MessageCreate"]["properties"]["role"]["enum"] == ["system", "user", "assistant"]
    assert "description" in comps["ConversationSave"]["properties"]["conversation_id"]
