"""ONNX export with Optimum's exporter (``optimum-onnx``), run from its own venv.

Optimum's ONNX exporter requires transformers<4.58 and does not import under transformers 5, which the studio
runs (see ``requirements-onnx.txt``). ``make setup`` therefore builds a second venv, ``.venv-onnx``, and the
export runs ``python -m optimum.exporters.onnx --task text-generation-with-past`` there as a subprocess on a
safetensors folder (the model, or the adapter merged into it first). The folder written holds ``model.onnx``
(with its KV-cache inputs), ``config.json`` and ``generation_config.json``; the tokenizer files and chat
template are copied from the source, so :class:`studio.inference.onnx_backend.OnnxRuntimeEngine` (onnxruntime in
the main venv) serves it. ``STUDIO_ONNX_PYTHON`` names another interpreter that has optimum-onnx.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio.errors import BackendUnavailableError, StudioError
from studio.files import write_text_atomic

PYTHON_ENV = "STUDIO_ONNX_PYTHON"
ONNX_VENV = ".venv-onnx"
TASK = "text-generation-with-past"
INSTALL_HINT = (
    "run `make setup-onnx` (a second venv, .venv-onnx, with optimum-onnx 0.1.0 and transformers 4.57: Optimum's "
    "ONNX exporter does not run on transformers 5), or point STUDIO_ONNX_PYTHON at a Python that has optimum-onnx"
)
#: files of the source folder the export needs beside model.onnx (tokenizer, chat template, generation defaults)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
LOG_TAIL_LINES = 20


def onnx_python() -> str:
    """The interpreter that runs Optimum's exporter: ``STUDIO_ONNX_PYTHON``, else ``.venv-onnx`` next to this
    checkout (or next to the running venv); a 503 naming the install command when there is none."""
    named = os.environ.get(PYTHON_ENV)
    if named:
        if not Path(named).is_file():
            raise BackendUnavailableError(f"{PYTHON_ENV}={named} is not a file; {INSTALL_HINT}")
        return named
    candidates = [
        Path(__file__).resolve().parents[2] / ONNX_VENV / "bin" / "python",
        Path(sys.prefix).parent / ONNX_VENV / "bin" / "python",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise BackendUnavailableError(f"the ONNX exporter is not installed here; {INSTALL_HINT}")


def export_command(python: str, model_dir: Path, out_dir: Path) -> list[str]:
    """The exporter's command line (Optimum's CLI module, fp32, the decoder with its KV cache)."""
    return [python, "-m", "optimum.exporters.onnx", "--model", str(model_dir), "--task", TASK, str(out_dir)]


def copy_tokenizer(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer files and chat template the exporter does not write (it would save them with its own,
    older transformers); returns the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        src = model_dir / name
        if src.is_file() and not (out_dir / name).exists():
            shutil.copy2(src, out_dir / name)
            copied.append(name)
    return copied


def legacy_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` as transformers 4.x reads it: transformers 5 keeps RoPE settings in ``rope_parameters``,
    which 4.x ignores (it would silently use its default ``rope_theta`` of 10000 and answer differently)."""
    out = dict(config)
    rope = out.get("rope_parameters")
    if isinstance(rope, dict):
        if "rope_theta" in rope and "rope_theta" not in out:
            out["rope_theta"] = rope["rope_theta"]
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        if scaling.get("rope_type", "default") != "default" and "rope_scaling" not in out:
            out["rope_scaling"] = scaling
    if "dtype" in out and "torch_dtype" not in out:
        out["torch_dtype"] = out["dtype"]
    return out


def stage_for_exporter(model_dir: Path, staging: Path) -> Path:
    """A folder the exporter's transformers 4.x reads as transformers 5 wrote it: every file of ``model_dir``
    linked, ``config.json`` rewritten by :func:`legacy_config`."""
    staging.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.name != "config.json" and not item.name.startswith("."):
            (staging / item.name).symlink_to(item.resolve())
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    write_text_atomic(staging / "config.json", json.dumps(legacy_config(config), indent=2))
    return staging


def export_onnx(
    model_dir: Path,
    out_dir: Path,
    *,
    log_file: Path,
    should_stop: Callable[[], bool] = lambda: False,
    threads: int | None = None,
    timeout_s: float = 6 * 3600,
) -> Path:
    """Export the safetensors folder ``model_dir`` to ``out_dir`` (which must not exist); returns the
    ``model.onnx`` path. The exporter's output goes to ``log_file``; on failure a :class:`StudioError` carries
    its last lines. ``should_stop`` is polled every second: the exporter is killed and ``out_dir`` removed."""
    python = onnx_python()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("PYTHONPATH", None)  # the exporter's venv must not see the studio's packages
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".onnx-source-", dir=out_dir.parent))
    shutil.rmtree(staging)
    try:
        return _run_exporter(
            python, stage_for_exporter(model_dir, staging), model_dir, out_dir, log_file, env, should_stop, timeout_s
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_exporter(
    python: str,
    source: Path,
    model_dir: Path,
    out_dir: Path,
    log_file: Path,
    env: dict[str, str],
    should_stop: Callable[[], bool],
    timeout_s: float,
) -> Path:
    command = export_command(python, source, out_dir)
    with open(log_file, "ab") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started = time.monotonic()
        try:
            while True:
                try:
                    code = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if should_stop() or time.monotonic() - started > timeout_s:
                        _kill(proc)
                        shutil.rmtree(out_dir, ignore_errors=True)
                        if should_stop():
                            raise StudioError("the ONNX export was cancelled") from None
                        raise StudioError(f"the ONNX export took longer than {timeout_s:.0f} s") from None
        except BaseException:
            _kill(proc)
            raise
    model_file = out_dir / "model.onnx"
    if code != 0 or not model_file.is_file():
        shutil.rmtree(out_dir, ignore_errors=True)
        raise StudioError(f"Optimum's ONNX exporter failed (exit code {code}):\n{_tail(log_file)}")
    copy_tokenizer(model_dir, out_dir)
    return model_file


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    keep = [line for line in text.splitlines() if line.strip() and "max diff" not in line]
    return "\n".join(keep[-lines:])
