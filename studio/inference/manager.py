"""Keeps loaded engines and runs generations on them safely for concurrent callers.

Each generation runs in its own worker thread holding that engine's lock (one forward pass at a time per
model), and hands its stream items to the caller through a queue, so a caller can consume them from sync
code (Gradio handlers, the CLI) or async code (the REST API), and can cancel at any time.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from studio.aliases.resolve import AliasResolver, ResolvedModel
from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore
from studio.errors import GenerationError, StudioError
from studio.inference.base import ChatMessage, ChatTemplateSpec, Engine, LoadedModelInfo, StreamItem
from studio.inference.params import SamplingParams, make_sampling_params
from studio.inference.stats import GenerationResult
from studio.models.convert import prepare_model
from studio.models.registry import ModelEntry, ModelRegistry
from studio.settings import Settings

log = logging.getLogger(__name__)

_DONE = object()


@dataclass(frozen=True)
class FinishedGeneration:
    request_id: str
    model_id: str
    endpoint: str
    result: GenerationResult
    error: str | None
    alias: str | None = None


class GenerationHandle:
    """A running generation. Iterate it (sync or async) for stream items; ``cancel()`` stops it early."""

    def __init__(
        self,
        request_id: str,
        model_id: str,
        cancel: threading.Event,
        owner: str | None = None,
        alias: str | None = None,
    ) -> None:
        self.id = request_id
        self.model_id = model_id
        self.owner = owner
        self.alias = alias
        self._cancel = cancel
        self._queue: queue.Queue[object] = queue.Queue()
        self.result = GenerationResult()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _take(self, item: object) -> StreamItem | None:
        if item is _DONE:
            return None
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    def __iter__(self) -> Iterator[StreamItem]:
        try:
            while (item := self._take(self._queue.get())) is not None:
                yield item
        finally:
            if not self.result.finished:
                self.cancel()

    async def aiter(self) -> AsyncIterator[StreamItem]:
        try:
            while (item := self._take(await asyncio.to_thread(self._queue.get))) is not None:
                yield item
        finally:
            if not self.result.finished:
                self.cancel()

    def wait(self) -> GenerationResult:
        """Consume the whole stream and return the result."""
        for _ in self:
            pass
        return self.result


class EngineManager:
    """Loads models on demand (one engine per model id), serialises generation per engine."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        on_finish: Callable[[FinishedGeneration], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.resolver = AliasResolver(AliasStore(settings.home / "aliases"), registry)
        self.on_finish = on_finish
        self._engines: dict[str, Engine] = {}
        self._engine_locks: dict[str, threading.Lock] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._active: dict[str, GenerationHandle] = {}

    # -- models --------------------------------------------------------------------------------------------
    def resolve(self, name: str) -> ResolvedModel:
        """Resolve a ``model`` name: user alias, then model alias / registry id, then a local path."""
        return self.resolver.resolve(name)

    def params_for(self, name: str, **request: Any) -> SamplingParams:
        """Sampling parameters for a request: per-request values > the alias's request_params > defaults."""
        resolved = self.resolver.resolve(name)
        merged = resolved.sampling_overrides()
        merged.update({k: v for k, v in request.items() if v is not None})
        return make_sampling_params(**merged)

    def load(self, name: str) -> Engine:
        """Return the engine for ``name``, loading (and converting, once) if needed."""
        entry = self.resolver.resolve(name).entry
        with self._lock:
            if entry.id in self._engines:
                return self._engines[entry.id]
            load_lock = self._load_locks.setdefault(entry.id, threading.Lock())
        with load_lock:
            with self._lock:
                if entry.id in self._engines:
                    return self._engines[entry.id]
            path = prepare_model(entry, self.settings.models_dir)
            from studio.inference.transformers_backend import TransformersEngine

            engine = TransformersEngine(entry.id, path, dtype=self.settings.dtype, threads=self.settings.threads)
            with self._lock:
                self._engines[entry.id] = engine
                self._engine_locks[entry.id] = threading.Lock()
            return engine

    def loaded(self) -> list[LoadedModelInfo]:
        with self._lock:
            return [e.info for e in self._engines.values()]

    def unload(self, name: str) -> bool:
        """Unload a model (waits for its running generation). Returns False when it was not loaded."""
        model_id = name if name in self._engines else self.resolver.resolve(name).entry.id
        with self._lock:
            engine = self._engines.get(model_id)
            lock = self._engine_locks.get(model_id)
        if engine is None or lock is None:
            return False
        with lock:
            with self._lock:
                self._engines.pop(model_id, None)
            engine.unload()
        return True

    def close(self) -> None:
        for handle in list(self._active.values()):
            handle.cancel()
        for model_id in list(self._engines):
            self.unload(model_id)

    # -- generation ----------------------------------------------------------------------------------------
    def start_chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        endpoint: str = "api",
        owner: str | None = None,
    ) -> GenerationHandle:
        """Start a chat generation in the background and return its handle at once.

        ``owner`` tags the generation (e.g. a browser session) so :meth:`cancel_owner` can stop it.
        """
        msgs = list(messages)
        resolved = self.resolver.resolve(model)
        template = self.template_for(resolved.chat_template, resolved.entry)
        return self._start(resolved, endpoint, owner, lambda e, c: e.stream_chat(msgs, params, c, template))

    def start_alias_trial(
        self,
        alias: AliasConfig,
        messages: Sequence[ChatMessage],
        *,
        endpoint: str = "aliases.try",
        owner: str | None = None,
    ) -> GenerationHandle:
        """Generate with an alias configuration that is not saved (the Aliases tab's "Try")."""
        entry = self.resolver.entry_for(alias)
        params = make_sampling_params(**alias.request_params.sampling_overrides())
        template = self.template_for(alias.chat_template, entry)
        resolved = ResolvedModel(entry, alias, "user")
        msgs = list(messages)
        return self._start(resolved, endpoint, owner, lambda e, c: e.stream_chat(msgs, params, c, template))

    def start_completion(
        self, model: str, prompt: str, params: SamplingParams, *, endpoint: str = "api", owner: str | None = None
    ) -> GenerationHandle:
        resolved = self.resolver.resolve(model)
        return self._start(resolved, endpoint, owner, lambda e, c: e.stream_completion(prompt, params, c))

    def chat(self, model: str, messages: Sequence[ChatMessage], params: SamplingParams) -> GenerationResult:
        """Generate a whole chat reply (blocking)."""
        return self.start_chat(model, messages, params, endpoint="python").wait()

    def cancel(self, request_id: str) -> bool:
        handle = self._active.get(request_id)
        if handle is None:
            return False
        handle.cancel()
        return True

    def cancel_owner(self, owner: str) -> int:
        """Cancel every running generation tagged with ``owner``; return how many."""
        handles = [h for h in list(self._active.values()) if h.owner == owner]
        for h in handles:
            h.cancel()
        return len(handles)

    def template_for(self, spec: str | None, entry: ModelEntry) -> ChatTemplateSpec | None:
        """The template an alias's ``chat_template`` names, or None for the model's own."""
        if not spec:
            return None
        from studio.aliases.templates import BUILTIN_TEMPLATES, resolve_template_source, template_info

        model_dir = entry.path if entry.format == "hf" else None
        source, _stops = resolve_template_source(spec, model_dir=model_dir, hf_cache=self.settings.hf_cache_dir)
        if source is None:
            return None
        if spec.strip().lower() in BUILTIN_TEMPLATES:
            info = template_info(spec.strip().lower())
            return ChatTemplateSpec(source, info.bos_token, info.eos_token)
        return ChatTemplateSpec(source)

    def _start(
        self,
        resolved: ResolvedModel,
        endpoint: str,
        owner: str | None,
        run: Callable[[Engine, threading.Event], Iterator[StreamItem]],
    ) -> GenerationHandle:
        entry = resolved.entry  # resolved before any thread starts, so an unknown name fails fast (404)
        alias_name = resolved.alias.alias if resolved.alias is not None else entry.id
        handle = GenerationHandle(uuid.uuid4().hex, entry.id, threading.Event(), owner, alias_name)
        self._active[handle.id] = handle
        submitted = time.perf_counter()

        def worker() -> None:
            error: str | None = None
            try:
                engine = self.load(entry.id)
                with self._engine_locks[entry.id]:
                    for item in run(engine, handle._cancel):
                        handle.result.add(item)
                        handle._queue.put(item)
            except StudioError as exc:
                error = str(exc)
                handle._queue.put(exc)
            except Exception as exc:
                log.exception("generation failed on %s", entry.id)
                error = f"{type(exc).__name__}: {exc}"
                handle._queue.put(GenerationError(f"generation failed on '{entry.id}': {error}"))
            finally:
                handle._queue.put(_DONE)
                self._active.pop(handle.id, None)
                if self.on_finish is not None and handle.result.start is not None:
                    try:
                        self.on_finish(
                            FinishedGeneration(handle.id, entry.id, endpoint, handle.result, error, alias_name)
                        )
                    except Exception:
                        log.exception("could not record finished generation")
            log.debug("generation %s took %.2fs", handle.id, time.perf_counter() - submitted)

        threading.Thread(target=worker, name=f"gen-{handle.id[:8]}", daemon=True).start()
        return handle
