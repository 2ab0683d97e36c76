"""The Models tab over REST (in-process FastAPI app): adapters listed, renamed and deleted; an export and a push
queued as jobs and followed; a remote endpoint registered as a deployment against a server started by the test, its
alias, stop and delete; every refusal in OpenAI's error shape naming the field."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings
from tests.conftest import make_lora_adapter

BASE = "/api/models"


class _Models(BaseHTTPRequestHandler):
    """An OpenAI-compatible server's /v1/models, as a cloud endpoint answers it."""

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "cloud-model", "object": "model"}]}).encode()
        self.send_response(200 if self.path.endswith("/v1/models") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


@pytest.fixture
def client(tmp_path: Path, studio_home: Path) -> Iterator[TestClient]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    ctx = AppContext.create(Settings(home=home, hf_cache=studio_home / "hf-cache"))
    make_lora_adapter(
        studio_home / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct", home / "adapters" / "mine", seed=4
    )
    with TestClient(create_api(ctx)) as c:
        yield c
    ctx.close()


def _error(r: Any, status: int, param: str | None = None) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param, error
    return str(error["message"])


def test_adapters_are_listed_renamed_and_deleted(client: TestClient) -> None:
    listed = client.get(f"{BASE}/adapters").json()["data"]
    mine = next(a for a in listed if a["name"] == "mine")
    assert mine["method"] == "LoRA" and mine["rank"] == 8 and "q_proj" in mine["target_modules"]
    assert mine["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    renamed = client.post(f"{BASE}/adapters/mine/rename", json={"name": "ours"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "ours"
    _error(client.post(f"{BASE}/adapters/ours/rename", json={"name": "../x"}), 400)
    assert client.delete(f"{BASE}/adapters/ours").json() == {"name": "ours", "object": "adapter", "deleted": True}
    _error(client.delete(f"{BASE}/adapters/ours"), 404)


def test_an_export_and_a_push_are_queued_as_jobs(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the push is only queued (no worker runs it)
    queued = client.post(f"{BASE}/exports", json={"format": "merged", "model": "default", "adapter": "mine"})
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert job["kind"] == "export" and job["state"] == "queued" and job["config"]["name"]
    status = client.get(f"{BASE}/jobs/{job['id']}").json()
    assert status["state"] == "queued" and status["kind"] == "export"
    assert client.get(f"{BASE}/exports").json() == {"object": "list", "data": []}  # nothing is published yet
    _error(client.post(f"{BASE}/exports", json={"format": "zip"}), 400)
    _error(client.post(f"{BASE}/exports", json={"format": "gguf", "name": "../x"}), 400)
    _error(client.post(f"{BASE}/exports", json={"format": "merged", "adapter": "nope"}), 404)
    push = client.post(f"{BASE}/push", json={"source": "mine", "repo_id": "me/mine", "token": "hf_secret_value"})
    assert push.status_code == 202, push.text
    assert "hf_secret_value" not in push.text  # the token goes to the job through a file, never into its row
    _error(client.post(f"{BASE}/push", json={"source": "mine", "repo_id": "not a repo"}), 400)
    _error(client.get(f"{BASE}/jobs/nope"), 404)


def test_a_remote_endpoint_is_a_deployment_with_an_alias(client: TestClient, endpoint: str) -> None:
    created = client.post(f"{BASE}/deployments/remote", json={"name": "cloud", "base_url": endpoint})
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["kind"] == "remote" and row["status"] == "healthy" and row["served_model"] == "cloud-model"
    assert [d["name"] for d in client.get(f"{BASE}/deployments").json()["data"]] == ["cloud"]
    assert client.post(f"{BASE}/deployments/cloud/alias").json()["alias"] == "deploy:cloud"
    assert "its logs are on that server" in client.get(f"{BASE}/deployments/cloud/logs").json()["log"]
    _error(client.post(f"{BASE}/deployments/remote", json={"name": "cloud", "base_url": endpoint}), 409)
    _error(client.post(f"{BASE}/deployments", json={"target": "default", "port": 70000}), 400, "port")
    _error(client.post(f"{BASE}/deployments", json={"target": "default", "name": "../x"}), 400, "name")
    assert client.post(f"{BASE}/deployments/cloud/stop").json()["status"] == "stopped"
    assert client.delete(f"{BASE}/deployments/cloud").json()["deleted"] is True
    _error(client.get(f"{BASE}/deployments/cloud"), 404)
