"""The Playground's load status line: which model is loaded, on which engine and device, and which adapter
answers. Written from the engine manager's state, so the line says the same whoever loaded the model: ``studio
serve`` at start, the Load button, Fine-Tune's "Load in Playground", the first message, or the API."""

from __future__ import annotations

from studio.errors import NotFoundError, StudioError
from studio.inference.base import LoadedModelInfo
from studio.inference.manager import EngineManager


def loaded_model_line(info: LoadedModelInfo) -> str:
    """One Markdown line on a loaded model: '**id** loaded (transformers engine) on cpu as bfloat16 (quantization:
    none), 270 MiB; adapter **x** active', then why that engine was chosen when the router said so."""
    active = info.extra.get("active_adapter", "")
    return (
        f"**{info.model_id}** loaded ({info.backend} engine) on {info.device} as {info.dtype}"
        f" (quantization: {info.extra.get('quantization', 'none')}), {info.memory_bytes / 2**20:.0f} MiB"
        + (f"; adapter **{active}** active" if active else "")
        + (f"\n\nEngine: {info.extra['engine_reason']}" if info.extra.get("engine_reason") else "")
    )


def load_status_line(engines: EngineManager, model: str | None) -> str:
    """The status line for the model picked in the Playground (``None`` or "" = the default model): loaded, with
    its active adapter, or not loaded yet and how it gets loaded. "" for a name that does not resolve (a half-typed
    one): the line stays quiet until the name means a model."""
    name = (model or "").strip() or "default"
    try:
        return loaded_model_line(engines.engine(name).info)
    except NotFoundError:
        pass
    except StudioError:  # not a model this studio knows (yet)
        return ""
    try:
        model_id = engines.resolve(name).entry.id
    except StudioError:
        return ""
    return f"**{model_id}** is not loaded yet: press Load, or send a message (the first one loads it)."
