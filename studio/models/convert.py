"""Turn a GGUF file into a safetensors model directory once, atomically.

The GGUF is dequantized by transformers, its GGUF quantizer dropped, and the result saved (bf16) into a
temporary directory next to the target, which is renamed into place only after the marker file is written.
A crash at any point leaves either no model or a complete one; a file lock keeps two processes from
converting the same model at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from studio.errors import ModelLoadError
from studio.models.registry import MARKER_FILE, ModelEntry, check_hf_dir, safe_name

log = logging.getLogger(__name__)

_STAMP_BYTES = 4 * 1024 * 1024


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def source_stamp(gguf: Path) -> dict[str, object]:
    """Identifies a GGUF file's content cheaply: size plus a hash of its first and last 4 MiB (not mtime,
    so two checkouts sharing one STUDIO_HOME do not reconvert each other's copy of the same file)."""
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        digest.update(fh.read(_STAMP_BYTES))
        if size > 2 * _STAMP_BYTES:
            fh.seek(size - _STAMP_BYTES)
        digest.update(fh.read(_STAMP_BYTES))
    return {"source": str(gguf), "source_size": size, "source_sha256_ends": digest.hexdigest()}


def converted_dir(entry: ModelEntry, models_dir: Path) -> Path:
    return models_dir / safe_name(entry.id if "/" in entry.id or ":" in entry.id else Path(entry.id).stem)


def is_converted(target: Path, entry: ModelEntry) -> bool:
    """True when ``target`` holds a finished conversion of ``entry``'s current GGUF file."""
    marker = target / MARKER_FILE
    if not marker.is_file() or check_hf_dir(target) is not None:
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    stamp = source_stamp(entry.path)
    return bool(
        data.get("source_size") == stamp["source_size"]
        and data.get("source_sha256_ends") == stamp["source_sha256_ends"]
    )


def prepare_model(entry: ModelEntry, models_dir: Path) -> Path:
    """Return a directory transformers can load for ``entry``; converts GGUF files the first time."""
    if entry.format == "hf":
        return entry.path
    target = converted_dir(entry, models_dir)
    if is_converted(target, entry):
        return target
    with _file_lock(models_dir / f".{target.name}.lock"):
        if is_converted(target, entry):  # another process finished while we waited
            return target
        convert_gguf(entry, target)
    return target


def convert_gguf(entry: ModelEntry, target: Path) -> None:
    """Dequantize ``entry.path`` (a GGUF file) into a safetensors directory at ``target``."""
    from studio.inference.torch_setup import import_torch

    torch = import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = entry.path
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".tmp-{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=parent))
    t0 = time.perf_counter()
    log.info("converting %s to safetensors in %s (once)", gguf, target)
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16, local_files_only=True
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"could not read GGUF file {gguf}: {exc}") from exc
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        marker = {"id": entry.id, "repo": entry.repo, "filename": entry.filename, "quant": entry.quant}
        marker.update(source_stamp(gguf))  # type: ignore[arg-type]
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        os.chmod(tmp, 0o755)
        if target.exists():
            # An older or broken conversion: move it aside first so the rename below stays atomic.
            old = parent / f".old-{target.name}-{os.getpid()}"
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.1fs", entry.id, time.perf_counter() - t0)
