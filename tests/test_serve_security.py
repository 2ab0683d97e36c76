"""`studio serve` refuses to expose an open studio: a non-loopback address or a share link needs a key, unless the
operator says --insecure (STUDIO_INSECURE=1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _serve(home: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), STUDIO_HF_CACHE=str(home / "hf-cache"))
    for name in ("STUDIO_API_KEY", "STUDIO_INSECURE", "STUDIO_HOST", "GRADIO_SERVER_NAME"):
        env.pop(name, None)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "studio", "serve", "--no-preload", "--no-worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0", "--port", "9"], {}),
        (["--host", "127.0.0.1", "--port", "9", "--share"], {}),
        (["--port", "9"], {"GRADIO_SERVER_NAME": "0.0.0.0"}),  # how a Hugging Face Space starts `python app.py`
    ],
)
def test_open_studio_on_a_reachable_address_refuses_to_start(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    proc = _serve(tmp_path, *args, env_extra=env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "STUDIO_API_KEY" in out and "--insecure" in out


@pytest.mark.slow
def test_insecure_flag_serves_open_on_all_interfaces(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _serve(tmp_path, "--host", "0.0.0.0", "--port", str(port), "--insecure")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the studio did not start with --insecure")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "WITHOUT a key" in out
