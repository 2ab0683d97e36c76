"""Serving processes: free ports, spawning (own session, log file), telling our process from a reused pid,
stopping a process group, reading a log's tail.

A deployment's process is started in a new session (it leads its own process group, so a stop reaches every
process it started -- vLLM's engine core and workers included) and is *not* tied to the studio's life: it
keeps serving across a studio restart and is re-attached afterwards. Its identity is the triple (pid, process
start time, argv): a pid the system has since given to another program never matches all three.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import psutil

from studio.jobs.procs import describe_exit

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ProcessState = Literal["alive", "gone", "other"]
#: the line the studio appends to a deployment's log when the process it watches ends
EXIT_MARK = "[studio]"


def _bind_host(host: str) -> str:
    return host.strip("[]")


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host``:``port`` cannot be bound now (someone listens there). Uses SO_REUSEADDR, as uvicorn does,
    so a port left in TIME_WAIT by a stopped server counts as free."""
    family = socket.AF_INET6 if ":" in _bind_host(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_bind_host(host), port))
        except OSError:
            return True
    return False


def port_holder(port: int) -> str:
    """' (pid N, name)' of the process listening on ``port`` when the system tells us, else ''."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                with contextlib.suppress(psutil.Error):
                    return f" (pid {conn.pid}, {psutil.Process(conn.pid).name()})"
                return f" (pid {conn.pid})"
    return ""


def spawn(command: list[str], env: dict[str, str], log_file: Path) -> tuple[int, float]:
    """Start ``command`` in a session of its own with stdout and stderr appended to ``log_file``; return its pid
    and start time. A thread of this process reaps it when it ends and appends how it ended to the log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    with open(log_file, "ab") as fh:
        fh.write(f"{EXIT_MARK} {stamp} starting: {' '.join(command)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    created = psutil.Process(proc.pid).create_time()
    watcher = threading.Thread(target=_watch, args=(proc, log_file), name=f"deploy-watch-{proc.pid}", daemon=True)
    with _WATCHERS_LOCK:
        _WATCHERS[proc.pid] = watcher
    watcher.start()
    return proc.pid, created


# The threads reaping the processes this process started, by pid: a check that finds one of them dead waits for its
# thread to write how it ended, so the log tail it reports ends with the exit line. (Plumbing, not state: a process
# re-attached after a restart has no watcher here and its log simply has no exit line.)
_WATCHERS: dict[int, threading.Thread] = {}
_WATCHERS_LOCK = threading.Lock()


def _watch(proc: subprocess.Popen[bytes], log_file: Path) -> None:
    code = proc.wait()  # reaps it: a dead child never lingers as a zombie holding its pid
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    with contextlib.suppress(OSError), open(log_file, "a", encoding="utf-8") as fh:
        fh.write(f"{EXIT_MARK} {stamp} the serving process (pid {proc.pid}) {describe_exit(code, oom_hint=False)}\n")


def wait_reaped(pid: int | None, timeout_s: float = 2.0) -> None:
    """When this process started ``pid``, wait (up to ``timeout_s``) until it is reaped and its exit is logged."""
    if pid is None:
        return
    with _WATCHERS_LOCK:
        watcher = _WATCHERS.get(pid)
    if watcher is None:
        return
    watcher.join(timeout_s)
    if not watcher.is_alive():
        with _WATCHERS_LOCK:
            _WATCHERS.pop(pid, None)


def process_state(pid: int | None, created: float | None, command: list[str]) -> ProcessState:
    """``alive`` when ``pid`` runs, is not a zombie, started at ``created`` and runs ``command``; ``gone`` when no
    such process is left; ``other`` when the pid now belongs to another program."""
    if pid is None:
        return "gone"
    for _ in range(20):
        try:
            proc = psutil.Process(pid)
            same_start = created is None or abs(proc.create_time() - created) < 1.0
            argv = proc.cmdline()
            # read last: a process that died while we looked is a zombie -- gone, not another program
            if proc.status() == psutil.STATUS_ZOMBIE:
                return "gone"
        except psutil.NoSuchProcess:  # ZombieProcess included
            return "gone"
        except psutil.AccessDenied:
            return "other"
        if argv or not command:
            return "alive" if same_start and (not command or argv == command) else "other"
        # an empty argv: the process is exiting (its memory is released before it turns zombie); ask again shortly
        time.sleep(0.05)
    return "gone"


def _group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` still runs (zombies do not count)."""
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):  # a process that ends while we look (getpgid: ESRCH)
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def stop_group(pid: int, timeout_s: float) -> str:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``timeout_s``; say how it ended."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return "was already gone"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return "stopped (SIGTERM)"
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return f"killed (SIGKILL after {timeout_s:g} s without stopping on SIGTERM)"


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' when it is not there); reads only the end of a large file."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = min(size, max(65536, lines * 400))
            fh.seek(size - chunk)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
