"""What a deployment's TARGET names -- an alias, ``adapter:NAME``, ``export:NAME`` (a merged folder, a GGUF file, an
ONNX model) -- and which engine serves it, resolved on the bundled model before anything starts; and the exact
command of a vLLM deployment (vLLM's own OpenAI server), started and stopped at once: vLLM's CPU build takes
minutes to become healthy on this machine, so its serving is not waited for here."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from studio.db.engine import Database
from studio.deploy.service import choose_deploy_engine, delete_deployment, start_deployment, stop_deployment
from studio.deploy.targets import resolve_target
from studio.errors import BackendUnavailableError, ForbiddenError, ModelNotFoundError, ValidationError
from studio.models.registry import bundled_gguf
from studio.settings import Settings
from tests.conftest import BUNDLED_DIR_NAME

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def settings(studio_home: Path, tmp_path: Path) -> Settings:
    """A home of its own sharing the session's converted models."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    s = Settings(home=home, hf_cache=studio_home / "hf-cache", api_key=None, insecure=False)
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


def _resolve(settings: Settings, target: str, adapter: str | None = None, engine: str = "auto") -> tuple[str, str]:
    from studio.deploy.service import _resolver

    found = resolve_target(settings, _resolver(settings), target, adapter, engine)
    return found.kind, choose_deploy_engine(found, engine)


def test_a_user_alias_keeps_its_engine(settings: Settings) -> None:
    gguf = bundled_gguf()
    assert gguf is not None
    alias = {"alias": "gguf:smol", "repo": BUNDLED, "filename": gguf.name, "context_params": {"engine": "llamacpp"}}
    (settings.home / "aliases" / "gguf--smol.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    if importlib.util.find_spec("llama_cpp") is None:
        with pytest.raises(BackendUnavailableError, match="pip install llama-cpp-python"):
            _resolve(settings, "gguf:smol")
        return
    assert _resolve(settings, "gguf:smol") == ("alias", "llamacpp")
    assert _resolve(settings, "default") == ("model", "transformers")


def test_a_remote_alias_is_registered_not_deployed(settings: Settings) -> None:
    alias = {"alias": "far", "repo": "m", "context_params": {"engine": "remote", "base_url": "http://127.0.0.1:9/v1"}}
    (settings.home / "aliases" / "far.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    with pytest.raises(ValidationError, match="register that server with `studio deploy add-remote`"):
        _resolve(settings, "far")


def test_export_targets_pick_their_engine(settings: Settings) -> None:
    exports = settings.home / "exports"
    merged = exports / "merged-smol"
    merged.mkdir(parents=True)
    for f in (settings.home / "models" / BUNDLED_DIR_NAME).iterdir():
        (merged / f.name).symlink_to(f)
    assert _resolve(settings, "export:merged-smol") == ("export", "transformers")
    gguf_export = exports / "gguf-smol"
    gguf_export.mkdir()
    gguf = bundled_gguf()
    assert gguf is not None
    (gguf_export / "model-q4_1.gguf").symlink_to(gguf)
    if importlib.util.find_spec("llama_cpp") is not None:
        assert _resolve(settings, "export:gguf-smol") == ("export", "llamacpp")
    (gguf_export / "model-f16.gguf").symlink_to(gguf)
    with pytest.raises(ValidationError, match=r"holds several GGUF files.*give one of them as the TARGET"):
        _resolve(settings, "export:gguf-smol")
    onnx = exports / "onnx-smol"
    onnx.mkdir()
    (onnx / "model.onnx").write_bytes(b"\x08\x07")
    from studio.inference.routing import ENGINES

    if "onnxruntime" not in ENGINES:
        with pytest.raises(BackendUnavailableError, match="no ONNX Runtime engine"):
            _resolve(settings, "export:onnx-smol")
    else:  # an ONNX export is a model.onnx with its tokenizer: ONNX Runtime serves it, and only it
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (onnx / name).symlink_to(settings.home / "models" / BUNDLED_DIR_NAME / name)
        if importlib.util.find_spec("onnxruntime") is not None:
            assert _resolve(settings, "export:onnx-smol") == ("export", "onnxruntime")
        with pytest.raises(ValidationError, match="is an ONNX model: serve it with onnxruntime"):
            _resolve(settings, "export:onnx-smol", engine="transformers")
    with pytest.raises(ValidationError, match="the onnxruntime engine serves ONNX exports"):
        _resolve(settings, "default", engine="onnxruntime")


def test_adapters_need_their_base_and_a_peft_engine(settings: Settings, studio_home: Path) -> None:
    from tests.conftest import make_lora_adapter

    adapters = settings.home / "adapters"
    folder = make_lora_adapter(settings.home / "models" / BUNDLED_DIR_NAME, adapters / "mine", seed=3)
    assert _resolve(settings, "adapter:mine") == ("adapter", "transformers")
    assert _resolve(settings, "default", adapter="mine") == ("model", "transformers")
    with pytest.raises(ValidationError, match=r"llama\.cpp cannot serve a PEFT adapter"):
        _resolve(settings, "adapter:mine", engine="llamacpp")
    with pytest.raises(ValidationError, match="adapter:NAME already names the adapter"):
        _resolve(settings, "adapter:mine", adapter="mine")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/base-model"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError, match="adapter 'mine' was trained on 'base-model', which is not on this"):
        _resolve(settings, "adapter:mine")


def test_a_model_outside_the_model_roots_is_refused(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ForbiddenError, match="is outside the folders the studio may use"):
        _resolve(settings, str(outside))
    with pytest.raises(ForbiddenError, match=r"'\.\./x' is outside the folders"):
        _resolve(settings, "../x")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (make setup)")
def test_a_vllm_deployment_runs_vllms_own_openai_server(db: Database, settings: Settings) -> None:
    d = start_deployment(db, settings, {"target": "default", "name": "fast", "engine": "vllm", "port": None})
    try:
        assert d.engine == "vllm" and d.status == "starting" and d.pid is not None
        cmd = psutil.Process(d.pid).cmdline()
        model_dir = str(settings.home / "models" / BUNDLED_DIR_NAME)
        assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
        for flag, value in (
            ("--model", model_dir),
            ("--served-model-name", "fast"),
            ("--host", "127.0.0.1"),
            ("--port", str(d.port)),
        ):
            assert cmd[cmd.index(flag) + 1] == value
        assert psutil.Process(d.pid).environ()["VLLM_NO_USAGE_STATS"] == "1"
    finally:
        stopped = stop_deployment(db, settings, "fast", timeout_s=5)
        with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
            os.killpg(d.pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert stopped.status == "stopped" and not psutil.pid_exists(d.pid)  # type: ignore[arg-type]
    delete_deployment(db, settings, "fast")
