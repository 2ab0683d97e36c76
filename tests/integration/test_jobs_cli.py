"""``studio jobs ...`` and ``studio worker`` as a user runs them: subprocesses on a temporary STUDIO_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _studio_has_job_verbs() -> bool:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {"jobs", "worker"} <= set(sub.choices or {})  # type: ignore[arg-type]


def test_studio_cli_has_the_job_verbs() -> None:
    assert _studio_has_job_verbs(), "studio/cli.py must call studio.jobs.cli.register(sub) in build_parser()"


# the verbs are the same functions either way; once wired, they are exercised through `python -m studio`
ENTRY = ["-m", "studio"] if _studio_has_job_verbs() else ["-m", "studio.jobs.cli"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def studio(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT))
    env.pop("STUDIO_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, *ENTRY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_submit_run_show_and_list(home: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "count.yaml", "kind: selftest\nsteps: 3\nsleep_s: 0.01\ncheckpoint_every: 2\n")
    later = write(tmp_path / "later.yaml", "kind: selftest\nsteps: 1\n")
    submitted = studio(home, "jobs", "submit", str(config), "--priority", "3")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id) == 32 and submitted.stdout == job_id + "\n"  # the id only
    scheduled = studio(home, "jobs", "submit", str(later), "--not-before", "2999-01-01T00:00:00+00:00")
    later_id = scheduled.stdout.strip()

    ran = studio(home, "worker", "--once", "--poll", "0.1")
    assert ran.returncode == 0, ran.stderr

    shown = studio(home, "jobs", "show", job_id[:8], "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["id"], data["state"], data["step"], data["progress"]) == (job_id, "succeeded", 3, 1.0)
    assert [m["step"] for m in data["metrics"]] == [1, 2, 3] and "train_loss" in data["metrics"][0]["values"]
    assert data["checkpoint_path"] == str(home / "runs" / job_id / "checkpoint-3")
    assert "artifact_path" in data and "step 3" in data["log_tail"]

    human = studio(home, "jobs", "show", job_id)
    assert "state       succeeded" in human.stdout and "train_loss=0.3333" in human.stdout

    listed = json.loads(studio(home, "jobs", "list", "--json").stdout)
    assert [(j["id"], j["state"]) for j in listed] == [(later_id, "queued"), (job_id, "succeeded")]
    table = studio(home, "jobs", "list", "--state", "queued").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "KIND", "NAME", "STATE"] and table[1].startswith(later_id)
    assert "later" in table[1] and "not before 2999-01-01" in table[1]


def test_cancel_and_resume(home: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "job.yaml", "kind: selftest\nsteps: 2\n")
    job_id = studio(home, "jobs", "submit", str(config)).stdout.strip()
    cancelled = studio(home, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"job {job_id} cancelled"
    again = studio(home, "jobs", "cancel", job_id)
    assert again.returncode == 2 and "already ended (cancelled)" in again.stderr
    resumed = studio(home, "jobs", "resume", job_id)
    assert resumed.returncode == 2 and "saved no checkpoint to resume from" in resumed.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kind: selftest\nstepz: 3\n", "invalid selftest job config: stepz: Extra inputs are not permitted"),
        ("kind: selftest\nsteps: -1\n", "steps: Input should be greater than or equal to 1"),
        ("kind: selftest\nsteps: [1\n", "not valid YAML (line 3"),
        ("- a list\n", "must be a YAML mapping"),
        ("kind: nonsense\n", "unknown job kind 'nonsense'; known kinds: audit, augment, download, dpo, eval, "),
    ],
)
def test_bad_configs_exit_non_zero_with_a_message_and_queue_nothing(
    home: Path, tmp_path: Path, text: str, needle: str
) -> None:
    result = studio(home, "jobs", "submit", str(write(tmp_path / "bad.yaml", text)))
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: ") and needle in last, result.stderr
    assert json.loads(studio(home, "jobs", "list", "--json").stdout) == []


def test_missing_things_are_named(home: Path, tmp_path: Path) -> None:
    missing = studio(home, "jobs", "submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: no such file" in missing.stderr
    unknown = studio(home, "jobs", "show", "0123456789abcdef")
    assert unknown.returncode == 2 and "job '0123456789abcdef' not found" in unknown.stderr
    bad_time = studio(
        home, "jobs", "submit", str(write(tmp_path / "j.yaml", "kind: selftest\n")), "--not-before", "soon"
    )
    assert bad_time.returncode == 2 and "--not-before must be an ISO date/time" in bad_time.stderr
