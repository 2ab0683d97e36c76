"""REST behaviour that needs no model: the optional bearer key and error shapes (in-process FastAPI app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub", api_key="s3cret"))
    with TestClient(create_api(ctx)) as client:
        yield client
    ctx.close()


def test_api_key_is_required_when_configured(keyed: TestClient) -> None:
    r = keyed.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert keyed.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = keyed.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in [m["id"] for m in ok.json()["data"]]


def test_unknown_parameter_is_rejected_by_name(keyed: TestClient) -> None:
    r = keyed.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer s3cret"},
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.5},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "temprature"
    assert "unknown parameter" in r.json()["error"]["message"]


def test_unknown_model_retrieve_is_404(keyed: TestClient) -> None:
    r = keyed.get("/v1/models/acme/nothing", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
