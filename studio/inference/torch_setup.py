"""Import torch the way this studio needs it: ``OMP_WAIT_POLICY=PASSIVE`` set first (spinning OpenMP
threads slow generation 5-50x on a busy CPU), thread count applied once, dtype picked for the hardware."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any


def import_torch(threads: int | None = None) -> Any:
    """Return the torch module, configured. Safe to call many times."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch


@cache
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 beats fp32 ~1.5x."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """True on CPUs with AMX tiles (Intel Sapphire Rapids and later)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "amx_tile" in flags


def resolve_dtype(dtype: str, device: str) -> Any:
    """Map the settings' dtype name ('auto', 'bfloat16', 'float16', 'float32') to a torch dtype."""
    torch = import_torch()
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32
