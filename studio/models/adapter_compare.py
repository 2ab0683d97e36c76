"""An adapter on a loaded model: enabling and disabling it, and comparing it with its base model.

- **Enable / disable** hot-swap on the loaded weights (:meth:`EngineManager.swap_adapter`): enabling loads the
  registered adapter on the model first when it is not loaded there yet, and makes it the one requests use when they
  name none; disabling makes the base model the default again (the adapter stays loaded, so enabling it again is a
  swap of a few milliseconds). Either works on every engine whose capabilities include adapters.
- **Speed** (:func:`compare_speed`): the same prompts, greedy, with the adapter and without it, measured on the
  engine from the token timestamps it streams (decode tok/s and time to first token), alternating which side goes
  first.
- **Quality** (:func:`submit_quality_comparison`): one ``eval`` job that scores the base model and the base with the
  adapter on the same dataset version and metrics; its result holds both side by side (the Evaluate tab and
  ``studio eval show`` show it; the Hub model card picks the base's figures from the same run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import ValidationError
from studio.models.adapters import get_adapter
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.db.engine import Database
    from studio.inference.manager import EngineManager


# -- enabling and disabling on a loaded model --------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterState:
    """The adapters of one loaded model."""

    model: str
    active: str | None  # the adapter requests use when they name none; None: the base model
    loaded: list[str]  # every adapter loaded on it (switching between them is a hot swap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def adapter_state(engines: EngineManager, model: str) -> AdapterState:
    """Which adapters the loaded ``model`` carries and which one is active (``NotFoundError`` when it is not
    loaded)."""
    engine = engines.engine(model)
    loaded = sorted(dict(getattr(engine, "adapters", {}) or {}))
    return AdapterState(model=model, active=getattr(engine, "active_adapter", None), loaded=loaded)


def _adapter_engine(engines: EngineManager, model: str) -> Any:
    engine = engines.engine(model)
    if not engine.capabilities.adapters:
        raise ValidationError(
            f"the {engine.backend} engine serving '{model}' cannot load adapters; load the model on transformers or "
            "vllm",
            param="model",
        )
    return engine


def enable_adapter(engines: EngineManager, model: str, adapter: str) -> AdapterState:
    """Make ``adapter`` (a registered adapter's name, or a name already loaded on ``model``) the active adapter of
    the loaded ``model``, loading it onto the model first when needed. The adapter is checked against the model's
    weights as it loads (``ValidationError`` when it does not fit); the base is not reloaded."""
    engine = _adapter_engine(engines, model)
    if adapter not in dict(getattr(engine, "adapters", {}) or {}) and "/" not in adapter:
        info = get_adapter(engines.settings, adapter)  # NotFoundError listing the registered ones
        if info.problem is not None:
            raise ValidationError(f"adapter '{info.name}' cannot be used: {info.problem}", param="adapter")
    name, _loaded_now = _resolve_loaded_name(engines, model, adapter)
    engines.swap_adapter(model, name)
    return adapter_state(engines, model)


def disable_adapter(engines: EngineManager, model: str) -> AdapterState:
    """Make the base model the default of the loaded ``model`` again; its adapters stay loaded (to enable one again
    is a swap)."""
    _adapter_engine(engines, model)
    engines.swap_adapter(model, "base")
    return adapter_state(engines, model)


# -- quality: one evaluation run of the base and the adapter -----------------------------------------------------


@dataclass(frozen=True)
class QualityComparison:
    """The evaluation job that scores the base and the adapter side by side."""

    job_id: str
    base_label: str  # the names the two models have in the job's results
    adapter_label: str
    dataset: str | None
    dataset_version: int | None
    metrics: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def submit_quality_comparison(
    settings: Settings,
    db: Database,
    adapter: str,
    *,
    dataset: str | None = None,
    dataset_version: int | None = None,
    metrics: Sequence[str] | None = None,
    limit: int | None = None,
    max_tokens: int | None = None,
    model: str | None = None,
) -> QualityComparison:
    """Queue one ``eval`` job that scores the adapter's base (``model``, default: the base the adapter records) and
    the base with the adapter on the same dataset version and metrics (defaults: the Evaluate tab's, from
    ``configs/eval/defaults.yaml``). Everything is checked at submit (the adapter is registered and usable, the
    model resolves, the dataset exists); the worker runs it as any eval job."""
    from studio.evaluation.defaults import eval_form_defaults
    from studio.jobs import queue

    info = get_adapter(settings, adapter, None)
    if info.problem is not None:
        raise ValidationError(f"adapter '{info.name}' cannot be used: {info.problem}", param="adapter")
    base = (model or info.base_model or "").strip()
    if not base:
        raise ValidationError(
            f"adapter '{info.name}' records no base model: name the model to compare it with", param="model"
        )
    defaults = eval_form_defaults()
    chosen_metrics = list(metrics) if metrics else list(defaults.metrics)
    base_label, adapter_label = f"{base} (base)", f"{base}+{info.name}"
    generation: dict[str, Any] = {"max_tokens": max_tokens or defaults.max_tokens}
    chosen_limit = defaults.limit if limit is None else limit
    config: dict[str, Any] = {
        "models": [
            {"model": base, "label": base_label},
            {"model": base, "adapter": info.name, "label": adapter_label},
        ],
        "dataset": dataset or defaults.dataset,
        "dataset_version": dataset_version,
        "metrics": chosen_metrics,
        "generation": generation,
        "limit": chosen_limit or None,
        "name": f"adapter {info.name} vs its base {base}"[:200],
    }
    job = queue.submit(db, "eval", config, settings=settings)
    return QualityComparison(
        job_id=job.id,
        base_label=base_label,
        adapter_label=adapter_label,
        dataset=job.config.get("dataset"),
        dataset_version=job.config.get("dataset_version"),
        metrics=list(job.config.get("metrics") or chosen_metrics),
    )


# -- speed with and without the adapter -------------------------------------------------------------------------


def _resolve_loaded_name(engines: EngineManager, model: str, adapter: str) -> tuple[str, bool]:
    """The name the adapter is loaded under on ``model`` (loading it when it is not): (name, loaded now)."""
    engine = engines.engine(model)
    loaded: dict[str, Path] = dict(getattr(engine, "adapters", {}) or {})
    if adapter in loaded:
        return adapter, False
    wanted = Path(os.path.realpath(engines.adapter_path(adapter)))
    for name, path in loaded.items():
        if Path(os.path.realpath(path)) == wanted:
            return name, False
    return engines.load_adapter_on(engine, adapter), True


def _figures(results: Sequence[Any]) -> dict[str, Any]:
    """Totals over several generations: decode tok/s (tokens after the first over the time between first and last),
    mean time to first token, tokens."""
    decode_tokens, decode_s, ttfts, completion = 0, 0.0, [], 0
    for result in results:
        tokens = result.tokens
        completion += len(tokens)
        if len(tokens) > 1 and tokens[-1].time > tokens[0].time:
            decode_tokens += len(tokens) - 1
            decode_s += tokens[-1].time - tokens[0].time
        stats = result.stats
        if stats.ttft_s is not None:
            ttfts.append(stats.ttft_s)
    return {
        "tokens_per_s": round(decode_tokens / decode_s, 2) if decode_s > 0 else None,
        "ttft_s": round(sum(ttfts) / len(ttfts), 4) if ttfts else None,
        "completion_tokens": completion,
        "decode_seconds": round(decode_s, 3),
    }


def compare_speed(
    engines: EngineManager,
    model: str,
    adapter: str,
    prompts: Sequence[str],
    *,
    max_tokens: int = 32,
    warmup: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generation speed of ``model`` with ``adapter`` and without it (the base), on the same ``prompts``, greedy,
    ``max_tokens`` each, on the same loaded weights (the adapter is switched per request, as the Playground's
    compare-with-base does). The order alternates per prompt so that neither side always runs first on a warm
    cache. ``adapter`` is a loaded adapter's name or a registered adapter / folder (loaded for the measurement; the
    model's active adapter is left as it was).

    Returns ``{"model", "adapter", "prompts", "max_tokens", "with_adapter": figures, "base": figures,
    "speed_ratio": adapter tok/s / base tok/s, "rows": per prompt}``; figures are ``tokens_per_s`` (decode),
    ``ttft_s`` (mean), ``completion_tokens``, ``decode_seconds``."""
    from studio.inference.base import ChatMessage

    texts = [p for p in (str(p).strip() for p in prompts) if p]
    if not texts:
        raise ValidationError("give at least one prompt to measure with", param="prompts")
    engines.load(model)
    engine = engines.engine(model)
    if not engine.capabilities.adapters:
        raise ValidationError(f"the {engine.backend} engine cannot load adapters", param="model")
    previous = getattr(engine, "active_adapter", None)
    name, loaded_now = _resolve_loaded_name(engines, model, adapter)
    if loaded_now:
        engines.swap_adapter(model, previous or "base")  # loading made it active; measuring should not
    params = engines.params_for(model, temperature=0.0, max_tokens=max_tokens)

    def run(prompt: str, which: str) -> Any:
        messages = [ChatMessage("user", prompt)]
        return engines.start_chat(model, messages, params, endpoint="adapters.speed", adapter=which).wait()

    if warmup:
        run(texts[0], name)
        run(texts[0], "base")
    with_adapter: list[Any] = []
    base: list[Any] = []
    rows: list[dict[str, Any]] = []
    for i, prompt in enumerate(texts):
        order = [(name, with_adapter), ("base", base)]
        for which, bucket in order if i % 2 == 0 else order[::-1]:
            bucket.append(run(prompt, which))
        a, b = with_adapter[-1], base[-1]
        rows.append(
            {
                "prompt": prompt,
                "adapter_tokens_per_s": a.stats.tokens_per_s,
                "base_tokens_per_s": b.stats.tokens_per_s,
                "adapter_text": a.text,
                "base_text": b.text,
            }
        )
        if on_progress is not None:
            on_progress(i + 1, len(texts))
    fa, fb = _figures(with_adapter), _figures(base)
    ratio = fa["tokens_per_s"] / fb["tokens_per_s"] if fa["tokens_per_s"] and fb["tokens_per_s"] else None
    return {
        "model": model,
        "adapter": name,
        "prompts": len(texts),
        "max_tokens": max_tokens,
        "with_adapter": fa,
        "base": fb,
        "speed_ratio": round(ratio, 3) if ratio is not None else None,
        "rows": rows,
    }
