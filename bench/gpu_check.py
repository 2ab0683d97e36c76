"""`make gpu-check`: everything the studio claims about CUDA, checked on a CUDA machine in one go (under 8 minutes).

1. the ``gpu``-marked tests (``pytest -m gpu``: the transformers engine on the GPU, bitsandbytes nf4 there, ``auto``
   picking vLLM when CUDA and vLLM are present);
2. the serving benchmark on CUDA (bench/serve.py: vLLM and transformers, the studio's /v1 against each raw engine
   and against plain batched ``generate``, at 1, 8 and 32 streams);

and writes both outcomes to bench/results/gpu.md (the benchmark's JSON beside it as gpu.json). Without CUDA it
stops at once with exit code 2 and says why: nothing here means anything on a CPU.

Each step runs in its own process group under a share of the time budget, so a hung vLLM start cannot take the
whole check with it; whatever finished is written either way. Exit code 0 when both steps passed, 1 otherwise.

    python bench/gpu_check.py [--budget 480] [--out bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480  # the "under 8 minutes"
TESTS_SHARE_S = 200  # the gpu tests' most; the benchmark gets the rest (two vLLM starts, ~2 x 60 s on a GPU)


@dataclass(frozen=True)
class Step:
    name: str
    command: list[str]
    returncode: int | None  # None: stopped at its time limit
    seconds: float
    output: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    @property
    def verdict(self) -> str:
        if self.returncode is None:
            return f"stopped after {self.seconds:.0f} s (time limit)"
        return f"{'passed' if self.passed else f'failed (exit {self.returncode})'} in {self.seconds:.0f} s"


def cuda_summary() -> str | None:
    """'<n> x <GPU name>, torch <v> (CUDA <v>)' when torch sees a GPU, else None."""
    sys.path.insert(0, str(ROOT))
    from studio.inference.torch_setup import import_torch

    torch = import_torch(None)
    if not torch.cuda.is_available():
        return None
    names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
    return f"{torch.cuda.device_count()} x {', '.join(names)}, torch {torch.__version__} (CUDA {torch.version.cuda})"


def no_cuda_message() -> str:
    try:
        import torch

        seen = f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) sees no GPU"
    except ImportError:
        seen = "torch is not installed (run make setup)"
    smi = "nvidia-smi is not installed" if shutil.which("nvidia-smi") is None else "check nvidia-smi's output"
    return (
        f"bench/gpu_check.py needs a CUDA GPU: {seen}; {smi}. Run `make gpu-check` on a machine with an NVIDIA "
        "GPU after `make setup` (which then installs requirements-cuda.txt and the CUDA vLLM in .venv-vllm)."
    )


def run_step(name: str, command: list[str], limit_s: float) -> Step:
    """Run ``command`` in its own process group; past ``limit_s`` the whole group (servers it started included)
    is stopped."""
    print(f"== {name}: {' '.join(command)} (at most {limit_s:.0f} s)", flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            code = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        text = out.read()
    step = Step(name, command, code, time.monotonic() - t0, text)
    print(f"   {step.verdict}", flush=True)
    return step


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def report(device: str, tests: Step, bench: Step, bench_md: str | None, seconds: float) -> str:
    """bench/results/gpu.md: where it ran, the tests' outcome, the benchmark's table (or why there is none)."""
    from studio.inference.vllm_backend import vllm_python

    lines = [
        "# GPU check (`make gpu-check`)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {device} · {platform.machine()} {os.cpu_count()} cores · "
        f"vLLM python {vllm_python()} · {seconds:.0f} s in all",
        "",
        f"## gpu-marked tests: {tests.verdict}",
        "",
        "```",
        _tail(tests.output, 15),
        "```",
        "",
        f"## Serving benchmark on CUDA: {bench.verdict}",
        "",
    ]
    if bench_md:
        lines += [bench_md.split("\n", 2)[-1].strip(), ""]  # the table without serve.md's own title
    lines += ["```", _tail(bench.output, 25 if bench_md is None else 12), "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default 480)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for gpu.md and gpu.json")
    args = ap.parse_args()

    device = cuda_summary()
    if device is None:
        print(no_cuda_message(), file=sys.stderr)
        return 2
    t0 = time.monotonic()
    deadline = t0 + args.budget
    tests = run_step(
        "gpu tests",
        [sys.executable, "-m", "pytest", "tests", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
        min(TESTS_SHARE_S, args.budget / 2),
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        bench = run_step(
            "serving benchmark",
            [
                sys.executable,
                str(ROOT / "bench" / "serve.py"),
                "--engines",
                "vllm,transformers",  # vLLM first, while nothing else holds GPU memory
                "--concurrency",
                "1,8,32",
                "--tokens",
                "64",
                "--out",
                tmp,
            ],
            deadline - time.monotonic() - 5,
        )
        serve_md = Path(tmp) / "serve.md"
        bench_md = serve_md.read_text(encoding="utf-8") if serve_md.is_file() else None
        args.out.mkdir(parents=True, exist_ok=True)
        if (Path(tmp) / "serve.json").is_file():
            shutil.copyfile(Path(tmp) / "serve.json", args.out / "gpu.json")
    text = report(device, tests, bench, bench_md, time.monotonic() - t0)
    (args.out / "gpu.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"written: {args.out / 'gpu.md'}")
    return 0 if tests.passed and bench.passed else 1


if __name__ == "__main__":
    sys.exit(main())
