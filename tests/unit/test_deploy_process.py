"""Process plumbing of local deployments with real, cheap processes (a Python that sleeps, one that exits): the
identity check that tells our process from a reused pid, re-attachment after a restart (alive ▶ kept, gone ▶ lost
with the last log lines), a process that dies ▶ failed, and a stop that ends the whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from studio.db.engine import Database
from studio.deploy.process import process_state, spawn
from studio.deploy.service import (
    delete_deployment,
    deployment_logs,
    log_path,
    reattach,
    refresh_one,
    stop_deployment,
)
from studio.deploy.tables import Deployment
from studio.errors import ConflictError
from studio.settings import Settings

# a "server" that never answers: it prints, starts a child (the group a stop must reach) and sleeps
SLEEPER = (
    "import subprocess, sys, time; print('sleeper up', flush=True); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of process groups a test started; killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# a "server" answering /health (503 while the file named by argv[2] exists) and /metrics (4 requests served)
FLAKY_SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(sys.argv[2])
        if self.path == "/health":
            code, body = (503, b"loading") if sick else (200, b'{"status": "ok"}')
        elif self.path == "/metrics":
            code, body = 200, b"whetstone_deployment_requests_total 4\\n"
        else:
            code, body = 404, b""
        self.send_response(code); self.end_headers(); self.wfile.write(body)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _add_row(
    db: Database, settings: Settings, name: str, code: str, started: list[int], args: tuple[str, ...] = ()
) -> str:
    """A local deployment row whose 'server' is ``python -c code PORT *args`` spawned as a deployment's process is."""
    row = Deployment(name=name, kind="local", target="default", target_kind="model", engine="transformers")
    port = _free_port()
    row.port, row.base_url, row.served_model = port, f"http://127.0.0.1:{port}/v1", name
    command = [sys.executable, "-c", code, str(port), *args]
    pid, created = spawn(command, dict(os.environ), log_path(settings, row.id))
    started.append(pid)
    row.pid, row.proc_created, row.command, row.status = pid, created, command, "starting"
    row.started_at = row.created_at
    row.config = {"target": "default", "start_timeout_s": 60.0}
    with db.session() as session:
        session.add(row)
    return row.id


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_process_identity_tells_a_reused_pid_apart(started: list[int], tmp_path: Path) -> None:
    command = [sys.executable, "-c", SLEEPER]
    pid, created = spawn(command, dict(os.environ), tmp_path / "x.log")
    started.append(pid)
    assert process_state(pid, created, command) == "alive"
    assert process_state(pid, created - 100, command) == "other"  # same pid, another start time
    assert process_state(pid, created, [*command, "--other"]) == "other"
    assert process_state(os.getpid(), None, command) == "other"
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: process_state(pid, created, command) == "gone")


def test_a_live_process_is_reattached_and_a_dead_one_is_lost(
    db: Database, settings: Settings, started: list[int]
) -> None:
    _add_row(db, settings, "alive", SLEEPER, started)
    dying = _add_row(db, settings, "dying", "print('loading weights', flush=True); raise SystemExit(3)", started)
    with db.session() as session:
        dying_pid = session.get(Deployment, dying).pid  # type: ignore[union-attr]
    _wait_for(lambda: not psutil.pid_exists(dying_pid) or psutil.Process(dying_pid).status() == "zombie")
    # a "studio restart": another Database object on the same file, as a new server process would open
    again = Database(settings.db_url)
    try:
        rows = {d.name: d for d in reattach(again, settings)}
    finally:
        again.dispose()
    assert rows["alive"].status == "starting"  # ours and alive, not answering yet: still within start_timeout_s
    assert rows["alive"].pid is not None and "connection refused" in rows["alive"].message
    lost = rows["dying"]
    assert lost.status == "lost" and lost.pid is None
    assert lost.message.startswith(f"the serving process (pid {dying_pid}) is gone; last log lines:")
    assert "loading weights" in lost.message and "exited with code 3" in lost.message
    assert refresh_one(db, settings, "dying").status == "lost"  # a lost one stays lost until restarted


def test_a_pid_held_by_another_program_is_lost_not_adopted(
    db: Database, settings: Settings, started: list[int]
) -> None:
    deployment_id = _add_row(db, settings, "reused", SLEEPER, started)
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        assert row is not None
        real_pid = row.pid
        row.pid, row.proc_created = os.getpid(), psutil.Process().create_time()  # the pid now runs pytest
        session.add(row)
    d = reattach(db, settings)[0]
    assert d.status == "lost" and "now belongs to another program" in d.message
    assert psutil.pid_exists(os.getpid())  # never signalled
    assert real_pid is not None


def test_a_dying_process_is_failed_with_its_last_log_lines(
    db: Database, settings: Settings, started: list[int]
) -> None:
    code = (
        "import sys, time; print('model loaded', flush=True); time.sleep(0.3); "
        "print('boom', file=sys.stderr); sys.exit(1)"
    )
    _add_row(db, settings, "crashy", code, started)
    assert refresh_one(db, settings, "crashy").status == "starting"
    time.sleep(0.5)
    _wait_for(lambda: refresh_one(db, settings, "crashy").status == "failed")
    d = refresh_one(db, settings, "crashy")
    assert "model loaded\nboom\n[studio]" in d.message and d.message.rstrip().endswith("exited with code 1")
    assert "boom" in deployment_logs(db, settings, "crashy", lines=5)


def test_stop_ends_the_whole_process_group_and_delete_waits_for_it(
    db: Database, settings: Settings, started: list[int]
) -> None:
    deployment_id = _add_row(db, settings, "group", SLEEPER, started)
    with db.session() as session:
        pid = session.get(Deployment, deployment_id).pid  # type: ignore[union-attr]
    assert pid is not None
    _wait_for(lambda: len(psutil.Process(pid).children()) == 1)
    child = psutil.Process(pid).children()[0]
    with pytest.raises(ConflictError, match=r"deployment 'group' is running .* stop it first"):
        delete_deployment(db, settings, "group")
    d = stop_deployment(db, settings, "group", timeout_s=5)
    assert d.status == "stopped" and d.message == "stopped by request: stopped (SIGTERM)" and d.pid is None
    assert not psutil.pid_exists(pid)
    _wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)
    assert "killed by signal 15 (SIGTERM)" in deployment_logs(db, settings, "group")
    delete_deployment(db, settings, "group")
    assert not log_path(settings, deployment_id).parent.exists()


def test_health_checks_drive_healthy_and_unhealthy(
    db: Database, settings: Settings, started: list[int], tmp_path: Path
) -> None:
    sick = tmp_path / "sick"
    _add_row(db, settings, "flaky", FLAKY_SERVER, started, args=(str(sick),))
    _wait_for(lambda: refresh_one(db, settings, "flaky").status == "healthy")
    d = refresh_one(db, settings, "flaky")
    assert d.requests_served == 4 and d.message == "" and d.uptime_s is not None
    sick.touch()
    d = refresh_one(db, settings, "flaky")
    assert d.status == "unhealthy" and d.message == (
        f"health check failed: http://127.0.0.1:{d.port}/health answered HTTP 503"
    )
    assert d.uptime_s is not None  # still running: its uptime goes on
    sick.unlink()
    assert refresh_one(db, settings, "flaky").status == "healthy"
    assert stop_deployment(db, settings, "flaky", timeout_s=5).requests_served == 4
