"""Remote deployments: a cloud-hosted OpenAI-compatible endpoint registered by URL, checked for real against a
loopback HTTP server started here (its /v1/models, with and without a key), and the ``deploy:<name>`` alias that
puts it in the Playground's picker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlmodel import select

from studio.aliases.resolve import AliasResolver
from studio.aliases.store import AliasStore
from studio.db.engine import Database
from studio.deploy.service import (
    add_remote,
    delete_deployment,
    deployment_alias,
    deployment_logs,
    list_deployments,
    refresh_one,
    restart_deployment,
    stop_deployment,
)
from studio.deploy.tables import Deployment
from studio.errors import NotFoundError, ValidationError
from studio.models.registry import ModelRegistry
from studio.settings import Settings

SECRET = "sk-remote-0123456789"


class FakeOpenAI(ThreadingHTTPServer):
    """A loopback OpenAI-compatible server listing two models; it wants ``Bearer <key>`` when ``key`` is set."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.seen_auth: list[str | None] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.server.seen_auth.append(auth)
        if self.server.key is not None and auth != f"Bearer {self.server.key}":
            self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "cloud-small"}, {"id": "cloud-large"}]})
        else:
            self._send(404, {"error": {"message": "no such route"}})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def open_server() -> Iterator[FakeOpenAI]:
    yield from _serve(FakeOpenAI())


@pytest.fixture
def keyed_server() -> Iterator[FakeOpenAI]:
    yield from _serve(FakeOpenAI(key=SECRET))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "STUDIO_API_KEY", "CLOUD_KEY"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


def test_registered_endpoint_is_checked_and_takes_the_first_model(
    db: Database, settings: Settings, open_server: FakeOpenAI
) -> None:
    d = add_remote(db, settings, {"name": "cloud", "base_url": open_server.base_url + "/"})
    assert d.status == "healthy", d.message
    assert d.kind == "remote" and d.engine == "remote"
    assert d.url == open_server.base_url and d.served_model == "cloud-small"
    assert d.requests_served is None and d.log_file is None and d.pid is None
    assert d.uptime_s is not None and d.uptime_s >= 0
    assert open_server.seen_auth == [None]  # no key configured: none sent
    assert "its logs are on that server" in deployment_logs(db, settings, "cloud")
    assert [r.name for r in list_deployments(db, settings)] == ["cloud"]


def test_a_model_the_server_does_not_serve_is_unhealthy(
    db: Database, settings: Settings, open_server: FakeOpenAI
) -> None:
    d = add_remote(db, settings, {"name": "cloud", "base_url": open_server.base_url, "model": "gpt-9"})
    assert d.status == "unhealthy"
    assert d.message == "the server does not serve 'gpt-9'; it serves: cloud-small, cloud-large"


def test_the_key_comes_from_the_named_variable_and_is_never_stored(
    db: Database, settings: Settings, keyed_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {"name": "cloud", "base_url": keyed_server.base_url, "api_key_env": "CLOUD_KEY", "model": "cloud-large"}
    d = add_remote(db, settings, data)
    assert d.status == "unhealthy"
    assert "the environment variable CLOUD_KEY (its API key) is not set" in d.message
    monkeypatch.setenv("CLOUD_KEY", "wrong")
    d = refresh_one(db, settings, "cloud")
    assert d.status == "unhealthy" and "refused the API key (HTTP 401)" in d.message
    monkeypatch.setenv("CLOUD_KEY", SECRET)
    d = refresh_one(db, settings, "cloud")
    assert d.status == "healthy", d.message
    assert keyed_server.seen_auth[-1] == f"Bearer {SECRET}"
    with db.session() as session:
        row = session.exec(select(Deployment)).one()
        assert SECRET not in row.model_dump_json() and row.api_key_env == "CLOUD_KEY"


def test_a_server_that_goes_away_turns_unhealthy_and_stop_ends_the_checks(
    db: Database, settings: Settings, open_server: FakeOpenAI
) -> None:
    add_remote(db, settings, {"name": "cloud", "base_url": open_server.base_url})
    open_server.shutdown()
    open_server.server_close()
    d = refresh_one(db, settings, "cloud")
    assert d.status == "unhealthy" and "connection refused" in d.message and d.uptime_s is None
    d = stop_deployment(db, settings, "cloud")
    assert d.status == "stopped"
    assert refresh_one(db, settings, "cloud").status == "stopped"  # a stopped endpoint is not checked


def test_stop_and_restart_a_remote_endpoint(db: Database, settings: Settings, open_server: FakeOpenAI) -> None:
    add_remote(db, settings, {"name": "cloud", "base_url": open_server.base_url})
    assert stop_deployment(db, settings, "cloud").status == "stopped"
    calls = len(open_server.seen_auth)
    d = restart_deployment(db, settings, "cloud")
    assert d.status == "healthy" and len(open_server.seen_auth) == calls + 1


def test_deployment_alias_reaches_the_endpoint_through_the_remote_engine(
    db: Database, settings: Settings, keyed_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUD_KEY", SECRET)
    d = add_remote(db, settings, {"name": "cloud", "base_url": keyed_server.base_url, "api_key_env": "CLOUD_KEY"})
    name = deployment_alias(db, settings, d.id[:8])
    assert name == "deploy:cloud"
    store = AliasStore(settings.home / "aliases", label="$STUDIO_HOME/aliases")
    cfg = store.get(name)
    assert cfg is not None and cfg.repo == "cloud-small"
    assert cfg.context_params.engine == "remote"
    assert cfg.context_params.base_url == keyed_server.base_url
    assert cfg.context_params.api_key_env == "CLOUD_KEY"
    resolved = AliasResolver(store, ModelRegistry(settings)).resolve(name)
    assert resolved.entry.format == "remote" and resolved.entry.url == keyed_server.base_url
    assert deployment_alias(db, settings, "cloud") == name  # a second click updates the same alias
    delete_deployment(db, settings, "cloud")
    assert store.get(name) is None
    with pytest.raises(NotFoundError, match="deployment 'cloud' not found; deployments: none"):
        refresh_one(db, settings, "cloud")


def test_alias_needs_a_model_name(db: Database, settings: Settings) -> None:
    add_remote(db, settings, {"name": "down", "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ValidationError, match="does not know its model name yet"):
        deployment_alias(db, settings, "down")


def test_cli_registers_lists_aliases_and_removes_an_endpoint(
    settings: Settings, open_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from studio.cli import main

    monkeypatch.setenv("STUDIO_HOME", str(settings.home))
    monkeypatch.setenv("STUDIO_HF_CACHE", str(settings.hf_cache_dir))
    assert main(["deploy", "add-remote", "cloud", "--base-url", open_server.base_url, "--model", "cloud-large"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cloud [") and ": healthy on remote, " in out and "(model 'cloud-large')" in out
    assert main(["deploy", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["status"], row["served_model"], row["url"]) == (
        "cloud", "healthy", "cloud-large", open_server.base_url
    )  # fmt: skip
    assert main(["deploy", "alias", "cloud"]) == 0
    assert capsys.readouterr().out.strip() == "deploy:cloud"
    assert (settings.home / "aliases" / "deploy--cloud.yaml").is_file()
    assert main(["deploy", "stop", "cloud"]) == 0
    assert "cloud [" in capsys.readouterr().out
    assert main(["deploy", "rm", "cloud"]) == 0
    assert not (settings.home / "aliases" / "deploy--cloud.yaml").exists()
    assert main(["deploy", "list"]) == 0
    assert "No deployments. Start one with: studio deploy start default" in capsys.readouterr().out
    assert main(["deploy", "start", "adapter:../x"]) == 2
    assert "'target'" in capsys.readouterr().err
