"""The repository as a Hugging Face Space (issue 19, point 5). The Hub is unreachable here, so this checks what can
be checked: both front matters (Gradio SDK, Docker SDK) parse with huggingface_hub and agree with this checkout
(Gradio version, app file, port, OAuth on); the packages Gradio's OAuth needs are in requirements.txt; and
``python app.py`` started the way a Space starts it (SPACE_ID, SYSTEM=spaces, the OAUTH_* variables the
``hf_oauth`` front matter injects, GRADIO_SERVER_NAME=0.0.0.0) serves, asks for a sign-in and offers Sign in with
Hugging Face."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub import RepoCard

from tests.conftest import ROOT, _free_port


def test_gradio_space_front_matter_matches_the_checkout() -> None:
    import gradio

    card = RepoCard.load(ROOT / "README.md", repo_type="space")
    assert card.data.sdk == "gradio"
    assert card.data.sdk_version == gradio.__version__
    assert (ROOT / card.data.app_file).is_file()
    assert card.data.get("hf_oauth") is True  # the Space sets OAUTH_CLIENT_ID...: Sign in with Hugging Face


def test_docker_space_front_matter_matches_the_dockerfile() -> None:
    card = RepoCard.load(ROOT / "space" / "docker" / "README.md", repo_type="space")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert card.data.sdk == "docker" and card.data.get("hf_oauth") is True
    assert f"EXPOSE {card.data.app_port}" in dockerfile
    assert "STUDIO_HOME=/data/whetstone" in dockerfile  # persistent storage is mounted at /data
    assert re.search(r"useradd .*--uid 1000", dockerfile)  # the user Docker Spaces run as


def test_requirements_hold_what_gradio_oauth_imports() -> None:
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    assert {"authlib", "itsdangerous", "gradio"} <= pinned
    import authlib  # noqa: F401  (gradio/oauth.py imports both)
    import itsdangerous  # noqa: F401


@pytest.mark.slow
def test_app_py_starts_as_a_space_with_oauth(studio_home: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = dict(
        os.environ,
        STUDIO_HOME=str(studio_home),
        STUDIO_HF_CACHE=str(studio_home / "hf-cache"),
        STUDIO_DATABASE_URL=f"sqlite:///{tmp_path / 'space.db'}",  # the session's other servers stay single-user
        GRADIO_SERVER_NAME="0.0.0.0",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_TEMP_DIR=str(tmp_path / "gradio-tmp"),
        SPACE_ID="team/whetstone",
        SYSTEM="spaces",
        SPACE_HOST=f"127.0.0.1:{port}",
        OAUTH_CLIENT_ID="client-id",
        OAUTH_CLIENT_SECRET="client-secret",
        OAUTH_SCOPES="openid profile",
        OPENID_PROVIDER_URL="https://huggingface.co",
        STUDIO_START_WORKER="0",
    )
    env.pop("STUDIO_API_KEY", None)
    log = tmp_path / "space.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the Space did not start:\n" + log.read_text()[-3000:])
        assert httpx.get(url + "/config", headers={"accept": "application/json"}).status_code == 401
        login = httpx.get(url + "/login")
        assert login.status_code == 200 and 'href="/login/huggingface"' in login.text
        # Gradio's OAuth route answers itself (the front door lets it through to start the sign-in)
        start = httpx.get(url + "/login/huggingface", follow_redirects=False, timeout=30)
        assert start.status_code != 401 and "/login?next=" not in start.headers.get("location", "")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
