"""Deployments with real serving processes: the bundled model on transformers behind ``studio serve-model``,
started once for the module (with a llama.cpp and an adapter deployment beside it) and taken through its whole life
in order -- healthy, a chat completion through the official ``openai`` SDK, requests counted, the ``deploy:<name>``
alias, conflicts, the CLI, stop, restart, re-attachment by a new studio session, ``kill -9`` (failed, with the log
tail) and a dead process found after a restart (lost).

No process may outlive the module: the fixture stops every deployment and kills any ``serve-model`` left on its home.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from studio.context import AppContext
from studio.db.engine import Database
from studio.deploy.service import (
    DeploymentPublic,
    add_remote,
    delete_deployment,
    deployment_alias,
    deployment_logs,
    list_deployments,
    reattach,
    refresh_one,
    restart_deployment,
    start_deployment,
    stop_deployment,
    wait_until_ready,
)
from studio.errors import ConflictError
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.conftest import BUNDLED_DIR_NAME, make_lora_adapter

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
FRANCE = "What is the capital of France?"
KEY = "deploy-test-key-0123456789abcdef"
START_TIMEOUT_S = 180.0


@dataclass
class Live:
    db: Database
    settings: Settings
    name: str  # the transformers deployment most tests use
    spare: str  # a second one (llama.cpp when installed): chatted with, then killed while "the studio is down"
    tuned: str  # a third: adapter:tuned, a LoRA adapter made here, on its base
    keyed: Settings  # the same home with STUDIO_API_KEY set: "locked" is served with that key on 0.0.0.0
    spare_engine: str
    startup_s: list[float]

    def current(self, name: str | None = None) -> DeploymentPublic:
        return refresh_one(self.db, self.settings, name or self.name)


def _serving_processes(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            cmd = proc.info["cmdline"] or []
            if "serve-model" in cmd and (proc.info["environ"] or {}).get("STUDIO_HOME") == str(home):
                found.append(proc)
    return found


def _chat(url: str, model: str, max_tokens: int = 12, api_key: str = "unused") -> str:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": FRANCE}], max_tokens=max_tokens, temperature=0
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    return reply.choices[0].message.content or ""


def _wait_healthy(live: Live, d: DeploymentPublic, t0: float, settings: Settings | None = None) -> DeploymentPublic:
    settings = settings or live.settings
    assert d.status == "starting" and d.pid is not None, d.message
    d = wait_until_ready(live.db, settings, d.id, timeout_s=START_TIMEOUT_S, poll_s=0.25)
    live.startup_s.append(time.perf_counter() - t0)
    assert d.status == "healthy", f"{d.status}: {d.message}\n{deployment_logs(live.db, settings, d.id, 40)}"
    return d


def _start_and_wait(live: Live, call: object) -> DeploymentPublic:
    t0 = time.perf_counter()
    return _wait_healthy(live, call(), t0)  # type: ignore[operator]


@pytest.fixture(scope="module")
def live(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Four deployments started together on a home of its own that shares the converted models: the bundled model
    on transformers ("smol", most tests), on llama.cpp ("spare"), with the studio's key on 0.0.0.0 ("locked") and a
    LoRA adapter made here on its base ("tuned")."""
    home = tmp_path_factory.mktemp("deploy-home") / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    settings = Settings(home=home, hf_cache=studio_home / "hf-cache", api_key=None, insecure=False)
    settings.ensure_dirs()
    db = Database(settings.db_url)
    spare_engine = "llamacpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    keyed = settings.model_copy(update={"api_key": KEY})
    state = Live(db, settings, "smol", "spare", "tuned", keyed, spare_engine, [])
    make_lora_adapter(home / "models" / BUNDLED_DIR_NAME, home / "adapters" / "tuned", seed=1)
    try:
        # all load at once (a serving process spends most of its start importing torch and transformers)
        t0 = time.perf_counter()
        started = [
            start_deployment(db, settings, {"target": "default", "name": "smol"}),
            start_deployment(db, settings, {"target": "default", "name": "spare", "engine": spare_engine}),
            start_deployment(db, settings, {"target": "adapter:tuned", "name": "tuned"}),
            start_deployment(db, keyed, {"target": "default", "name": "locked", "host": "0.0.0.0"}),
        ]
        for d in started[:3]:
            _wait_healthy(state, d, t0)
        _wait_healthy(state, started[3], t0, keyed)
        yield state
    finally:
        for d in list_deployments(db, settings, refresh=False):
            with contextlib.suppress(Exception):
                stop_deployment(db, settings, d.id, timeout_s=5)
        leftovers = _serving_processes(home)  # whatever a failed test left behind
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)
        db.dispose()
        print(f"\ndeployment start to healthy: {', '.join(f'{s:.1f} s' for s in state.startup_s)}")
    assert not _serving_processes(home), "a serving process outlived the tests"


def test_starts_healthy_on_its_port_with_its_log(live: Live) -> None:
    d = live.current()
    assert d.status == "healthy" and d.kind == "local" and d.engine == "transformers"
    assert d.target == "default" and d.target_kind == "model" and d.served_model == "smol"
    assert d.port is not None and 8100 <= d.port < 8200  # the first free port of the automatic range
    assert d.url == f"http://127.0.0.1:{d.port}/v1"
    assert d.uptime_s is not None and d.uptime_s > 0
    assert psutil.Process(d.pid).cmdline()[2:5] == ["studio", "serve-model", "default"]
    assert d.log_file == f"$STUDIO_HOME/deployments/{d.id}/server.log"
    log = deployment_logs(live.db, live.settings, "smol", lines=200)
    assert "serving 'smol' on http://127.0.0.1:" in log and "Uvicorn running" in log
    assert "GET /health" not in log and "GET /metrics" not in log  # the studio's polling stays out of the log
    health = httpx.get(f"http://127.0.0.1:{d.port}/health", timeout=5).json()
    assert health["status"] == "ok" and health["loaded"] == [d.model_id]  # one model, loaded before the port opened


def test_an_adapter_is_served_on_its_base(live: Live) -> None:
    d = live.current(live.tuned)
    assert d.status == "healthy" and d.engine == "transformers", d.message
    assert d.target_kind == "adapter" and d.adapter == "adapters/tuned"
    assert d.model_id.endswith(BUNDLED_DIR_NAME)  # the base named in the adapter's adapter_config.json
    assert psutil.Process(d.pid).cmdline()[4:] == [
        "adapter:tuned", "--engine", "transformers", "--host", "127.0.0.1", "--port", str(d.port), "--name", "tuned"
    ]  # fmt: skip
    tuned = _chat(d.url, "tuned")
    assert tuned and "Paris" not in tuned  # the random LoRA really changes the base's answer
    assert "with adapter tuned on transformers" in deployment_logs(live.db, live.settings, "tuned", 100)
    assert stop_deployment(live.db, live.settings, "tuned").status == "stopped"  # its cores go back to the others


def test_a_keyed_deployment_wants_the_key_everywhere_but_health(live: Live) -> None:
    """Served on 0.0.0.0 with the studio's key: every route but /health wants it; the studio reads the requests
    served from /metrics with it, and the deploy: alias names the variable (never the key) and a loopback URL."""
    d = refresh_one(live.db, live.keyed, "locked")
    assert d.status == "healthy" and d.host == "0.0.0.0" and d.url == f"http://0.0.0.0:{d.port}/v1"
    base = f"http://127.0.0.1:{d.port}"
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    assert httpx.get(f"{base}/v1/models", timeout=5).status_code == 401
    assert httpx.get(f"{base}/metrics", timeout=5).status_code == 401
    assert "Paris" in _chat(f"{base}/v1", "locked", api_key=KEY)
    assert refresh_one(live.db, live.keyed, "locked").requests_served == 1
    assert deployment_alias(live.db, live.keyed, "locked") == "deploy:locked"
    saved = (live.settings.home / "aliases" / "deploy--locked.yaml").read_text()
    assert yaml.safe_load(saved)["context_params"] == {
        "engine": "remote", "base_url": f"{base}/v1", "api_key_env": "STUDIO_API_KEY"
    }  # fmt: skip
    assert KEY not in saved
    assert stop_deployment(live.db, live.keyed, "locked").status == "stopped"


def test_chat_completion_through_the_openai_sdk_is_counted(live: Live) -> None:
    from openai import NotFoundError, OpenAI

    before = live.current().requests_served
    assert before is not None
    client = OpenAI(base_url=live.current().url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["smol"]
    assert "Paris" in _chat(live.current().url, "smol")
    with pytest.raises(NotFoundError, match="this deployment serves only 'smol'"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert live.current().requests_served == before + 1


def test_the_deploy_alias_puts_it_in_the_playground(live: Live) -> None:
    """'Use in the Playground': one call makes the alias ``deploy:smol`` (remote engine) the Playground and
    Compare can pick; a studio context chats with the deployment through it."""
    before = live.current().requests_served
    name = deployment_alias(live.db, live.settings, "smol")
    assert name == "deploy:smol"
    ctx = AppContext.create(live.settings)
    try:
        result = ctx.engines.chat(
            name, [ChatMessage("user", FRANCE)], make_sampling_params(temperature=0, max_tokens=12)
        )
        assert "Paris" in result.text
        assert ctx.engines.loaded()[0].backend == "remote"
    finally:
        ctx.close()
    assert live.current().requests_served == (before or 0) + 1
    # the same server registered as a remote endpoint: its /v1/models names the model
    remote = add_remote(live.db, live.settings, {"name": "smol-remote", "base_url": live.current().url})
    assert remote.status == "healthy" and remote.served_model == "smol"
    delete_deployment(live.db, live.settings, "smol-remote")


def test_a_port_in_use_and_a_taken_name_are_refused(live: Live) -> None:
    d = live.current()
    with pytest.raises(ConflictError, match=f"port {d.port} is in use by the deployment 'smol'"):
        start_deployment(live.db, live.settings, {"target": "default", "port": d.port, "name": "other"})
    with pytest.raises(ConflictError, match="a deployment named 'smol' exists"):
        start_deployment(live.db, live.settings, {"target": "default", "name": "smol"})
    # serve-model itself refuses a port someone else holds before loading anything
    env = dict(os.environ, STUDIO_HOME=str(live.settings.home))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "studio", "serve-model", "default", "--port", str(port)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 2
    assert f"error: port {port} on 127.0.0.1 is in use" in out.stderr


def test_cli_lists_and_shows_logs(
    live: Live, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = dict(os.environ, STUDIO_HOME=str(live.settings.home), STUDIO_HF_CACHE=str(live.settings.hf_cache_dir))
    env.pop("STUDIO_API_KEY", None)
    # the console command as a user runs it (once: each start imports the studio)
    out = subprocess.run(
        [sys.executable, "-m", "studio", "deploy", "list", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["smol"]["status"] == "healthy" and rows["smol"]["requests_served"] >= 2
    assert rows["spare"]["engine"] == live.spare_engine
    # the other verbs in this process: the same main() the console script calls
    from studio.cli import main

    for key in ("STUDIO_HOME", "STUDIO_HF_CACHE"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("STUDIO_API_KEY", raising=False)
    capsys.readouterr()
    assert main(["deploy", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "ENGINE", "URL", "UPTIME", "REQUESTS", "TARGET"]
    smol = next(line.split() for line in lines[1:] if " smol " in line)
    assert smol[1:5] == ["smol", "healthy", "transformers", rows["smol"]["url"]] and smol[-1] == "default"
    assert main(["deploy", "logs", "smol", "-n", "200"]) == 0
    assert "Uvicorn running" in capsys.readouterr().out
    assert main(["deploy", "stop", "nope"]) == 2
    assert "deployment 'nope' not found; deployments: locked, smol, spare, tuned" in capsys.readouterr().err


def test_stop_then_restart_keeps_the_count(live: Live) -> None:
    d = live.current()
    old_pid, served = d.pid, d.requests_served
    assert old_pid is not None and served is not None and served >= 2
    stopped = stop_deployment(live.db, live.settings, "smol")
    assert stopped.status == "stopped" and stopped.pid is None and stopped.uptime_s is None
    assert stopped.requests_served == served
    assert not psutil.pid_exists(old_pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{d.port}/health", timeout=5)
    assert live.current().status == "stopped"  # a stopped deployment is not checked
    again = _start_and_wait(live, lambda: restart_deployment(live.db, live.settings, "smol"))
    assert again.pid != old_pid and again.port == d.port and again.requests_served == served
    assert "Paris" in _chat(again.url, "smol")
    assert live.current().requests_served == served + 1


def test_a_new_studio_session_reattaches_the_live_process(live: Live) -> None:
    d = live.current()
    again = Database(live.settings.db_url)  # what a restarted studio opens
    try:
        rows = {r.name: r for r in reattach(again, live.settings)}
    finally:
        again.dispose()
    assert rows["smol"].status == "healthy" and rows["smol"].pid == d.pid
    assert rows["smol"].requests_served == d.requests_served
    assert "Paris" in _chat(d.url, "smol")


def test_kill_9_marks_it_failed_with_its_last_log_lines(live: Live) -> None:
    d = live.current()
    assert d.pid is not None
    os.kill(d.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (current := live.current()).status != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert current.status == "failed" and current.pid is None
    assert current.message.startswith(f"the serving process (pid {d.pid}) is gone; last log lines:\n")
    assert current.message.rstrip().endswith("was killed by signal 9 (SIGKILL)")
    assert "POST /v1/chat/completions" in current.message  # the server's own lines come with it
    assert current.requests_served == d.requests_served


def test_the_second_engine_serves_the_same_api(live: Live) -> None:
    d = live.current(live.spare)
    assert d.status == "healthy" and d.engine == live.spare_engine and d.port != live.current().port
    assert _chat(d.url, "spare", max_tokens=8).strip()  # llama.cpp's Q4_1 answer differs from bf16's: any text
    assert live.current(live.spare).requests_served == 1


def test_a_process_that_died_while_the_studio_was_down_is_lost(live: Live) -> None:
    d = live.current(live.spare)
    assert d.status == "healthy" and d.pid is not None
    os.kill(d.pid, signal.SIGKILL)  # nobody checks until the "restarted studio" re-attaches
    deadline = time.monotonic() + 10
    while psutil.pid_exists(d.pid) and time.monotonic() < deadline:  # this process's watcher reaps it
        time.sleep(0.05)
    again = Database(live.settings.db_url)
    try:
        rows = {r.name: r for r in reattach(again, live.settings)}
    finally:
        again.dispose()
    lost = rows["spare"]
    assert lost.status == "lost" and lost.pid is None
    assert "is gone; last log lines:" in lost.message and "Uvicorn running" in lost.message
    assert rows["smol"].status == "failed"  # what the studio found before is kept
    # failed and lost deployments can be deleted: row, log folder and the deploy: alias
    for name in ("spare", "smol", "tuned", "locked"):
        delete_deployment(live.db, live.settings, name)
    assert list_deployments(live.db, live.settings) == []
    assert not (live.settings.home / "deployments" / d.id).exists()
    assert not (live.settings.home / "aliases" / "deploy--smol.yaml").exists()
