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


@pytest.fixture(scope="session")
def server(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """`python -m studio serve` on a free port, exactly as a user starts it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, STUDIO_HOME=str(studio_home), STUDIO_HF_CACHE=str(studio_home / "hf-cache"))
    env.pop("STUDIO_API_KEY", None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio", "serve", "--host", "127.0.0.1", "--port", str(port)],
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
    yield ServerHandle(url, studio_home, proc, log)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
