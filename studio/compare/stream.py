"""Contenders and side-by-side streaming: start one generation per side and merge their streams into one.

A contender is a model name (alias, registry id or path), optionally with a PEFT adapter on top, written
``"<model> + <adapter>"`` (e.g. ``"default + lora-a"``). A plain model always answers with its base weights
(``adapter="base"``), whatever adapter the Playground made active on the same loaded model.

:func:`stream_sides` yields a snapshot of every side whenever any side produced something (throttled), so a
UI can show all replies growing at the same time from one generator. Sides on different engines run in
parallel; sides on one transformers model (e.g. a base model and an adapter on it) take turns per decode step,
each with its own adapter, so they stream at the same time too; only llama.cpp serves one request at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import GenerationError, StudioError, ValidationError
from studio.inference.base import ChatMessage
from studio.inference.manager import EngineManager, GenerationHandle
from studio.inference.params import SamplingParams
from studio.inference.stats import GenerationResult

log = logging.getLogger(__name__)

ADAPTER_SEPARATOR = " + "
_END = object()


@dataclass(frozen=True)
class ContenderSpec:
    """One side of a comparison: a model and an optional adapter (a name under STUDIO_HOME/adapters or a path)."""

    model: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        """``"model"`` or ``"model + adapter"`` (what the leaderboard and the votes record)."""
        return f"{self.model}{ADAPTER_SEPARATOR}{self.adapter}" if self.adapter else self.model

    @classmethod
    def parse(cls, text: str) -> ContenderSpec:
        """``"default"`` → base model; ``"default + lora-a"`` (or ``"default+lora-a"``) → with that adapter."""
        raw = (text or "").strip()
        if not raw:
            raise ValidationError("a contender needs a model name", param="models")
        model, sep, adapter = raw.rpartition("+")
        if not sep:
            return cls(raw)
        model, adapter = model.strip(), adapter.strip()
        if not model or not adapter:
            raise ValidationError(f"write a contender as 'model' or 'model + adapter', not {raw!r}", param="models")
        return cls(model, None if adapter == "base" else adapter)

    def to_dict(self) -> dict[str, Any]:
        """As stored with a battle (``config_a`` / ``config_b``)."""
        return {"label": self.label, "model": self.model, "adapter": self.adapter}


def parse_contenders(values: Sequence[str], *, minimum: int = 2, maximum: int = 4) -> list[ContenderSpec]:
    """Contender strings → specs, checking how many there are (duplicates are allowed: same config twice)."""
    specs = [ContenderSpec.parse(v) for v in values if v and v.strip()]
    if not minimum <= len(specs) <= maximum:
        raise ValidationError(
            f"pick {minimum} to {maximum} models, aliases or adapters to compare; got {len(specs)}", param="models"
        )
    return specs


def prepare_side(engines: EngineManager, spec: ContenderSpec) -> str | None:
    """Load a side's model (and adapter, keeping the engine's active adapter as it was); return the ``adapter``
    argument that makes a generation use exactly this side's weights."""
    engine = engines.load(spec.model)
    if spec.adapter is None:
        return "base" if engine.capabilities.adapters else None
    if not engine.capabilities.adapters:
        raise ValidationError(
            f"the {engine.backend} engine serving '{spec.model}' cannot load adapters", param="adapter"
        )
    name = Path(spec.adapter).name
    loaded: dict[str, Path] = getattr(engine, "adapters", {})
    if name not in loaded:
        previous: str | None = getattr(engine, "active_adapter", None)
        engines.load_adapter_on(engine, spec.adapter, name)
        engines.swap_adapter(spec.model, previous or "base")  # loading made it active; the Playground keeps its own
    return name


@dataclass(frozen=True)
class SideView:
    """A snapshot of one side: its reply so far and its figures."""

    index: int
    text: str
    running: bool
    error: str | None = None
    stats: dict[str, Any] | None = None
    stats_text: str = ""


@dataclass
class _Side:
    handle: GenerationHandle | None
    error: str | None = None
    done: bool = False
    result: GenerationResult = field(default_factory=GenerationResult)

    def view(self, index: int) -> SideView:
        """A snapshot of this side now."""
        result = self.handle.result if self.handle is not None else self.result
        if result.start is None:
            stats, text = None, ("failed" if self.error else "loading the model…")
        elif self.done:
            s = result.stats
            stats, text = s.to_dict(), s.summary()
        else:
            live = result.stats
            tps = f" · {live.tokens_per_s:.1f} tok/s" if live.tokens_per_s else ""
            ttft = f" · TTFT {live.ttft_s * 1000:.0f} ms" if live.ttft_s is not None else ""
            stats, text = None, f"generating… {live.completion_tokens} tokens{ttft}{tps} ▌"
        return SideView(index, result.text, not self.done, self.error, stats, text)


def stream_sides(
    handles: Sequence[GenerationHandle | StudioError], *, min_interval: float = 0.05
) -> Iterator[list[SideView]]:
    """Merge several running generations into one stream of snapshots (one :class:`SideView` per side).

    A side given as an error (it could not start) is shown failed at once. Snapshots come at most every
    ``min_interval`` seconds, plus one whenever a side finishes and a final one. Closing the iterator early
    cancels the generations still running.
    """
    sides = [_Side(None, error=str(h), done=True) if isinstance(h, StudioError) else _Side(h) for h in handles]
    events: queue.Queue[tuple[int, object]] = queue.Queue()

    def pump(index: int, handle: GenerationHandle) -> None:
        """Forward one handle's items to the shared queue, then an end marker."""
        try:
            for item in handle:
                events.put((index, item))
        except StudioError as exc:
            events.put((index, exc))
        except Exception as exc:  # a failing side must not take the others down
            log.exception("compare side %d failed", index)
            events.put((index, GenerationError(f"{type(exc).__name__}: {exc}")))
        finally:
            events.put((index, _END))

    running = 0
    for index, side in enumerate(sides):
        if side.handle is not None:
            running += 1
            threading.Thread(target=pump, args=(index, side.handle), name=f"compare-{index}", daemon=True).start()
    try:
        last = 0.0
        yield [s.view(i) for i, s in enumerate(sides)]
        while running:
            index, item = events.get()
            side = sides[index]
            finished = False
            if item is _END:
                side.done, running, finished = True, running - 1, True
            elif isinstance(item, StudioError):
                side.error = str(item)
            now = time.monotonic()
            if finished or now - last >= min_interval:
                last = now
                yield [s.view(i) for i, s in enumerate(sides)]
    finally:
        for side in sides:
            if side.handle is not None and not side.done:
                side.handle.cancel()


def start_sides(
    engines: EngineManager,
    specs: Sequence[ContenderSpec],
    conversations: Sequence[Sequence[ChatMessage]],
    params: SamplingParams | Sequence[SamplingParams],
    *,
    owner: str | None = None,
    endpoint: str = "compare",
) -> list[GenerationHandle | StudioError]:
    """Start every side (``conversations[i]`` is what side i answers, with ``params`` or ``params[i]``); a side
    that cannot start becomes its error.

    Every model and adapter is loaded before the first generation starts, so no side's first tokens wait for
    another side's loading.
    """
    prepared: list[str | StudioError | None] = []
    for spec in specs:
        try:
            prepared.append(prepare_side(engines, spec))
        except StudioError as exc:
            prepared.append(exc)
    per_side = [params] * len(specs) if isinstance(params, SamplingParams) else list(params)
    out: list[GenerationHandle | StudioError] = []
    for spec, messages, adapter, p in zip(specs, conversations, prepared, per_side, strict=True):
        if isinstance(adapter, StudioError):
            out.append(adapter)
            continue
        try:
            out.append(engines.start_chat(spec.model, messages, p, endpoint=endpoint, owner=owner, adapter=adapter))
        except StudioError as exc:
            out.append(exc)
    return out


def final_results(handles: Sequence[GenerationHandle | StudioError]) -> list[GenerationResult | None]:
    """Each side's finished result (None for a side that failed to start)."""
    return [None if isinstance(h, StudioError) else h.result for h in handles]


def compare_once(
    engines: EngineManager,
    specs: Sequence[ContenderSpec],
    messages: Sequence[ChatMessage],
    params: SamplingParams | Sequence[SamplingParams],
) -> list[GenerationResult]:
    """The same chat answered by every contender (all started at once); the finished results in the order
    given. The first side that fails raises its error."""
    handles = start_sides(engines, specs, [messages] * len(specs), params, endpoint="compare.api")
    results: list[GenerationResult] = []
    try:
        for handle in handles:
            if isinstance(handle, StudioError):
                raise handle
            results.append(handle.wait())
    finally:
        for handle in handles:
            if not isinstance(handle, StudioError) and not handle.result.finished:
                handle.cancel()
    return results
