"""Process plumbing shared by the worker and the job process: environments, parent-death signals, kills."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from studio.settings import Settings

_PR_SET_PDEATHSIG = 1
_PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def child_env(settings: Settings, database_url: str, parent_pid: int | None = None) -> dict[str, str]:
    """The environment of a process started for ``settings``: ``STUDIO_*`` from them, the studio importable.

    The child rebuilds ``Settings()`` from these variables, so a worker made with settings that came from
    anywhere (tests, the server) starts its job processes on the same home and database.
    """
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = f"STUDIO_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    env["STUDIO_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow a busy machine down 5-50x
    env["PYTHONUNBUFFERED"] = "1"  # tracebacks and prints reach the job's output file as they happen
    # Progress bars are drawn for a terminal; written to a file they are pages of carriage returns. A job reports
    # its progress to its row (the monitor's progress bar) instead.
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars (loading weights) follow this one
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # datasets' map (TRL's tokenising) bars
    if parent_pid is not None:
        env["STUDIO_PARENT_PID"] = str(parent_pid)
    else:
        env.pop("STUDIO_PARENT_PID", None)
    return env


def die_with_parent(sig: int = signal.SIGKILL) -> int | None:
    """Ask Linux to send ``sig`` to this process when the process that started it dies.

    The parent's pid is read from ``STUDIO_PARENT_PID``; if it is already gone, exit at once. Returns that pid
    (None when not set). Elsewhere than Linux only the check is done; callers also watch ``os.getppid()``.
    """
    raw = os.environ.get("STUDIO_PARENT_PID")
    if not raw or not raw.isdigit():
        return None
    parent = int(raw)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(3)
    return parent


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False if there is no such group any more."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def describe_exit(returncode: int, oom_hint: bool = True) -> str:
    """How a process ended: "was killed by signal 9 (SIGKILL) — out of memory, ...?" or "exited with code 1".

    ``oom_hint`` adds the out-of-memory guess to a SIGKILL nobody here sent.
    """
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        hint = " — out of memory, or killed by hand?" if oom_hint and number == signal.SIGKILL else ""
        return f"was killed by signal {number} ({name}){hint}"
    return f"exited with code {returncode}"
