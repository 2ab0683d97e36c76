"""Deployment requests are checked before anything starts: names that are paths, bad ports, unknown fields, and the
requests-served counter parsed from Prometheus text."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.auth import InsecureBindError
from studio.db.engine import Database
from studio.deploy.config import check_name, parse_create, parse_remote
from studio.deploy.health import parse_request_count
from studio.deploy.process import port_in_use, tail
from studio.deploy.service import add_remote, start_deployment
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "STUDIO_API_KEY", "STUDIO_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "x" * 65, "a b", "default"])
def test_deployment_names_that_are_paths_or_reserved_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_create({"target": "default", "name": name})
    assert err.value.param == "name"
    with pytest.raises(ValidationError) as err:
        parse_remote({"name": name, "base_url": "http://127.0.0.1:9/v1"})
    assert err.value.param == "name"


def test_an_empty_name_is_chosen_locally_and_required_remotely() -> None:
    assert parse_create({"target": "default", "name": " "}).name is None  # start_deployment picks one
    with pytest.raises(ValidationError, match="give a name") as err:
        parse_remote({"name": "", "base_url": "http://127.0.0.1:9/v1"})
    assert err.value.param == "name"


def test_check_name_message_names_the_rule() -> None:
    assert check_name(" my-model_1.q8 ") == "my-model_1.q8"
    with pytest.raises(ValidationError, match=r"'name': '\.\./x' is not a deployment name.*no '/', no '\.\.'"):
        check_name("../x")


@pytest.mark.parametrize("target", ["adapter:../x", "export:../../etc", "adapter:", "export:a/b"])
def test_adapter_and_export_targets_must_be_single_names(target: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_create({"target": target})
    assert err.value.param == "target"


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 0), ("port", 65536), ("engine", "tensorrt"), ("host", "bad host!"), ("start_timeout_s", 1)],
)
def test_bad_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        parse_create({"target": "default", field: value})
    assert err.value.param == field


def test_unknown_fields_and_bad_urls_are_refused() -> None:
    with pytest.raises(ValidationError) as err:
        parse_create({"target": "default", "gpu": True})
    assert err.value.param == "gpu"
    with pytest.raises(ValidationError) as err:
        parse_remote({"name": "cloud", "base_url": "ftp://example.com/v1"})
    assert err.value.param == "base_url"
    with pytest.raises(ValidationError) as err:
        parse_remote({"name": "cloud", "base_url": "https://example.com/v1", "api_key_env": "MY KEY"})
    assert err.value.param == "api_key_env"
    assert parse_remote({"name": "cloud", "base_url": "https://example.com/v1/"}).base_url == "https://example.com/v1"


def test_start_refuses_path_names_and_missing_targets_before_anything_runs(db: Database, settings: Settings) -> None:
    with pytest.raises(ValidationError):
        start_deployment(db, settings, {"target": "default", "name": "../x"})
    with pytest.raises(NotFoundError, match="adapter 'nope' not found in \\$STUDIO_HOME/adapters"):
        start_deployment(db, settings, {"target": "adapter:nope"})
    with pytest.raises(NotFoundError, match="export 'gone' not found in \\$STUDIO_HOME/exports"):
        start_deployment(db, settings, {"target": "export:gone"})
    assert not (settings.home / "deployments").exists() or not any((settings.home / "deployments").iterdir())


def test_export_without_a_model_is_refused(db: Database, settings: Settings) -> None:
    half = settings.home / "exports" / "half"
    half.mkdir(parents=True)
    (half / "manifest.json").write_text("{}")
    with pytest.raises(ValidationError, match=r"export 'half'.*holds no model.*is the export finished"):
        start_deployment(db, settings, {"target": "export:half"})


def test_a_non_loopback_host_needs_a_key(db: Database, settings: Settings) -> None:
    with pytest.raises(InsecureBindError, match=r"refusing to serve on 0\.0\.0\.0"):
        start_deployment(db, settings, {"target": "default", "host": "0.0.0.0"})


def test_a_port_in_use_is_refused_naming_it(db: Database, settings: Settings, tmp_path: Path) -> None:
    model = tmp_path / "home" / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(ConflictError, match=f"port {port} on 127.0.0.1 is in use") as err:
            start_deployment(db, settings, {"target": str(model), "port": port, "engine": "transformers"})
        assert err.value.param == "port"
    assert not port_in_use("127.0.0.1", port)


def test_names_are_unique_across_local_and_remote(db: Database, settings: Settings) -> None:
    first = add_remote(db, settings, {"name": "cloud", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    assert first.status == "unhealthy" and "connection refused" in first.message
    with pytest.raises(ConflictError, match="a deployment named 'cloud' exists"):
        add_remote(db, settings, {"name": "cloud", "base_url": "http://127.0.0.1:9/v1"})


def test_request_count_sums_known_counters() -> None:
    text = (
        "# HELP whetstone_deployment_requests_total Requests.\n"
        "# TYPE whetstone_deployment_requests_total counter\n"
        "whetstone_deployment_requests_total 7\n"
        "whetstone_deployment_request_errors_total 3\n"
    )
    assert parse_request_count(text) == 7
    vllm = (
        'vllm:request_success_total{finished_reason="stop",model_name="m"} 5.0\n'
        'vllm:request_success_total{finished_reason="length",model_name="m"} 2.0\n'
        "vllm:num_requests_running 1.0\n"
    )
    assert parse_request_count(vllm) == 7
    assert parse_request_count("other_metric 4\n") is None


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert tail(log, 3) == "line 4997\nline 4998\nline 4999"
    assert tail(tmp_path / "missing.log", 3) == ""
