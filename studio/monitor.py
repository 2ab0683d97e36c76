"""Memory figures, measured: this process's resident memory, the machine's, and the GPU's on CUDA."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0, "int4": 0.5, "nf4": 0.5}


@dataclass(frozen=True)
class MemorySnapshot:
    process_rss: int
    system_total: int
    system_available: int
    gpu_allocated: int | None = None
    gpu_reserved: int | None = None
    gpu_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        gib = 1024**3
        text = (
            f"process RAM {self.process_rss / gib:.2f} GiB · system free {self.system_available / gib:.1f} "
            f"of {self.system_total / gib:.1f} GiB"
        )
        if self.gpu_total:
            text += f" · GPU {(self.gpu_allocated or 0) / gib:.2f} of {self.gpu_total / gib:.1f} GiB"
        return text


def memory_snapshot() -> MemorySnapshot:
    """Current memory figures (GPU ones only when torch is already imported and CUDA is available)."""
    vm = psutil.virtual_memory()
    gpu: dict[str, int | None] = {"gpu_allocated": None, "gpu_reserved": None, "gpu_total": None}
    torch = __import__("sys").modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        gpu = {
            "gpu_allocated": int(torch.cuda.memory_allocated()),
            "gpu_reserved": int(torch.cuda.memory_reserved()),
            "gpu_total": int(total),
        }
        del free
    return MemorySnapshot(
        process_rss=psutil.Process(os.getpid()).memory_info().rss,
        system_total=vm.total,
        system_available=vm.available,
        **gpu,
    )


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS drops after an unload."""
    gc.collect()
    torch = __import__("sys").modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True)
class LoadEstimate:
    """What loading a model would take, before loading it."""

    parameters: int
    bytes_needed: int
    bytes_available: int
    device: str
    dtype: str
    fits: bool
    suggestion: str  # "none" or the quantization that would fit

    def summary(self) -> str:
        gib = 1024**3
        verdict = "fits" if self.fits else f"does not fit — use {self.suggestion}"
        return (
            f"~{self.parameters / 1e6:.0f}M parameters, ~{self.bytes_needed / gib:.2f} GiB as {self.dtype} on "
            f"{self.device}; {self.bytes_available / gib:.1f} GiB free → {verdict}"
        )


def count_parameters(model_dir: Path) -> int:
    """Parameters in a safetensors model directory, read from the file headers (no weights loaded)."""
    import json
    import struct

    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= int(dim)
            total += count
    return total


def estimate_load(model_dir: Path, *, dtype: str, device: str, quantization: str = "none") -> LoadEstimate:
    """Estimate the memory a model needs (parameters × bytes per parameter + 20 % for activations and the
    KV cache) against free memory (RAM, or GPU memory on CUDA), and which quantization would fit."""
    params = count_parameters(model_dir)
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info()
        available = int(free)
    else:
        available = int(psutil.virtual_memory().available)
    key = quantization if quantization in BYTES_PER_PARAM else dtype
    need = int(params * BYTES_PER_PARAM.get(key, 4.0) * 1.2)
    suggestion = "none"
    if need > available:
        for q in ("int8", "nf4"):
            if params * BYTES_PER_PARAM[q] * 1.2 <= available:
                suggestion = q
                break
        else:
            suggestion = "nf4 (still too large)"
    return LoadEstimate(params, need, available, device, key, need <= available, suggestion)
