"""Keeps loaded engines and runs generations on them safely for concurrent callers.

Each generation runs in its own worker thread holding that engine's gate — shared when the engine serves
several requests at once (vLLM and remote servers batch them, the transformers engine interleaves their decode
steps), exclusive when it does not (llama.cpp) — and hands its stream items to the caller through a queue, so a
caller can consume them from sync code (Gradio handlers, the CLI) or async code (the REST API), and can cancel at
any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.aliases.resolve import AliasResolver, ResolvedModel
from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore
from studio.errors import GenerationError, NotFoundError, PayloadTooLargeError, StudioError, ValidationError
from studio.inference.admission import Admission
from studio.inference.base import ChatMessage, ChatTemplateSpec, Engine, LoadedModelInfo, StreamItem
from studio.inference.locks import EngineGate
from studio.inference.params import SamplingParams, make_sampling_params
from studio.inference.routing import EngineChoice, choose_engine
from studio.inference.stats import GenerationResult
from studio.models.convert import prepare_model
from studio.models.registry import ModelEntry, ModelRegistry
from studio.monitor import LoadEstimate, estimate_load, release_memory
from studio.safety.service import SafetyReport, SafetyService, check_prompt, guard_stream
from studio.settings import Settings
from studio.users.acting import current_principal

log = logging.getLogger(__name__)

_DONE = object()
_SURROGATE = re.compile("[\ud800-\udfff]")
QUANTIZATIONS = ("none", "int8", "int4", "nf4", "auto")
ESTIMATE_QUANTIZATIONS = ("none", "int8", "int4", "nf4")


@dataclass(frozen=True)
class FinishedGeneration:
    request_id: str
    model_id: str
    endpoint: str
    result: GenerationResult
    error: str | None
    alias: str | None = None
    user_id: str | None = None  # the signed-in user who asked (None: the single user, the CLI, a job)


class _Handoff(queue.Queue[object]):
    """The queue between a worker thread and its consumer. A sync consumer blocks on ``get``; an async one
    waits on an ``asyncio.Event`` that every ``put`` sets through the consumer's loop, so waiting for tokens
    holds no thread (32 waiting streams would otherwise tie up the loop's whole default executor)."""

    def __init__(self) -> None:
        super().__init__()
        self._wake: Callable[[], None] | None = None

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        wake = self._wake
        if wake is not None:
            wake()

    async def get_async(self) -> object:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the consumer's loop has closed: nobody waits any more
                loop.call_soon_threadsafe(ready.set)

        self._wake = wake
        try:
            while True:
                try:
                    return self.get_nowait()
                except queue.Empty:
                    ready.clear()
                    try:  # a put between the first look and clear() has already fired its wake-up
                        return self.get_nowait()
                    except queue.Empty:
                        await ready.wait()
        finally:
            self._wake = None


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
        self._queue = _Handoff()
        self.result = GenerationResult()
        self._worker: threading.Thread | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread to end (its request_log row is written by then); True when it has."""
        if self._worker is None:
            return True
        self._worker.join(timeout)
        return not self._worker.is_alive()

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
            while (item := self._take(await self._queue.get_async())) is not None:
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
    """Loads models on demand (one engine per model id); serialises generation on engines that cannot serve
    several requests at once."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        on_finish: Callable[[FinishedGeneration], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        # answers name alias files as $STUDIO_HOME/aliases/x.yaml, never by their absolute path
        self.resolver = AliasResolver(AliasStore(settings.home / "aliases", label="$STUDIO_HOME/aliases"), registry)
        self.on_finish = on_finish
        # the signed-in user's concurrent-generation quota: takes a place (or raises 429), returns its release
        self.user_gate: Callable[[Any], Callable[[], None] | None] | None = None
        self._engines: dict[str, Engine] = {}
        self._gates: dict[str, EngineGate] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._active: dict[str, GenerationHandle] = {}
        self.admission = Admission(settings.max_running_per_model, settings.max_queued_per_model)
        self.safety = SafetyService(settings)

    # -- models --------------------------------------------------------------------------------------------
    def resolve(self, name: str) -> ResolvedModel:
        """Resolve a ``model`` name: user alias, then model alias / registry id, then a local path."""
        return self.resolver.resolve(name)

    def params_for(self, name: str, **request: Any) -> SamplingParams:
        """Sampling parameters for a request: per-request values > the alias's request_params > defaults.

        A request asking for more than ``STUDIO_MAX_TOKENS_LIMIT`` new tokens is refused (ValidationError naming
        max_tokens); an alias's or the studio's default above the limit is lowered to it."""
        resolved = self.resolver.resolve(name)
        merged = resolved.sampling_overrides()
        asked = {k: v for k, v in request.items() if v is not None}
        merged.update(asked)
        params = make_sampling_params(**merged)
        if "max_tokens" not in asked and params.max_tokens > self.settings.max_tokens_limit:
            params = params.model_copy(update={"max_tokens": self.settings.max_tokens_limit})
        return self._check_max_tokens(params)

    # -- limits --------------------------------------------------------------------------------------------
    def _check_max_tokens(self, params: SamplingParams) -> SamplingParams:
        limit = self.settings.max_tokens_limit
        if params.max_tokens > limit:
            raise ValidationError(
                f"Invalid value for 'max_tokens': {params.max_tokens} is more than this server allows per request "
                f"({limit}, STUDIO_MAX_TOKENS_LIMIT)",
                param="max_tokens",
            )
        return params

    def _check_prompt(self, texts: Sequence[str], param: str) -> None:
        """Refuse a prompt over ``STUDIO_MAX_PROMPT_CHARS`` (413) or one that is not valid Unicode text (a lone
        surrogate, 400) -- by counting characters, before anything tokenises it or writes it anywhere."""
        total = sum(len(t) for t in texts)
        limit = self.settings.max_prompt_chars
        if total > limit:
            raise PayloadTooLargeError(
                f"'{param}' has {total:,} characters, more than the limit of {limit:,} per request "
                "(STUDIO_MAX_PROMPT_CHARS); shorten the prompt or raise the limit",
                param=param,
            )
        for text in texts:
            bad = _SURROGATE.search(text)
            if bad is not None:
                raise ValidationError(
                    f"Invalid value for '{param}': it holds a lone surrogate (U+{ord(bad.group()):04X} at "
                    f"character {bad.start()}), which is not valid Unicode text",
                    param=param,
                )

    def load(
        self, name: str, *, quantization: str = "none", adapter: str | None = None, engine: str | None = None
    ) -> Engine:
        """Return the engine for ``name``, loading (and converting, once) if needed.

        ``quantization`` is none, int8, int4, nf4 (bitsandbytes) or auto (quantize only when the estimate says
        the model would not fit in free memory); asking for another quantization than the loaded one reloads.
        ``adapter`` (a PEFT adapter directory, absolute or under STUDIO_HOME/adapters) is loaded on top.
        ``engine`` (transformers, vllm, llamacpp, onnxruntime, remote, auto) overrides the alias's
        ``context_params.engine``; asking for another engine than the loaded one reloads.
        """
        return self.load_resolved(
            self.resolver.resolve(name), quantization=quantization, adapter=adapter, engine=engine
        )

    def adopt_engine(self, name: str, engine: Engine) -> str:
        """Serve ``name`` (alias, registry id or path) with an engine built elsewhere -- a test's fake engine, or
        one built by hand -- exactly as if :meth:`load` had loaded it. Returns the key it is kept under."""
        resolved = self.resolver.resolve(name)
        key, _current = self._find(resolved, self.choose_engine(resolved))
        with self._lock:
            self._engines[key] = engine
            self._gates[key] = EngineGate()
        return key

    def choose_engine(self, resolved: ResolvedModel, engine: str | None = None) -> EngineChoice:
        """The engine that serves ``resolved`` (``engine`` > the alias's ``context_params.engine`` > auto)."""
        cp = resolved.alias.context_params if resolved.alias else None
        if engine not in (None, "", "auto"):
            return choose_engine(resolved.entry, engine, requested_by="load request")
        return choose_engine(
            resolved.entry,
            cp.engine if cp else None,
            n_parallel=cp.n_parallel if cp else None,
            requested_by=f"alias '{resolved.alias.alias}'" if resolved.alias else "alias",
        )

    def load_resolved(
        self,
        resolved: ResolvedModel,
        *,
        quantization: str = "none",
        adapter: str | None = None,
        engine: str | None = None,
    ) -> Engine:
        """:meth:`load` for an already resolved model (remote models have no registry name to resolve again)."""
        entry = resolved.entry
        if quantization not in QUANTIZATIONS:
            raise ValidationError(
                f"unknown quantization '{quantization}'; choose one of {', '.join(QUANTIZATIONS)}",
                param="quantization",
            )
        choice = self.choose_engine(resolved, engine)
        key, current = self._find(resolved, choice)
        with self._lock:
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        wanted = quantization
        if current is not None and wanted not in ("auto", "none") and current.backend != "transformers":
            raise ValidationError(
                f"quantization '{wanted}' is a transformers (bitsandbytes) feature; '{entry.id}' runs on "
                f"{current.backend}",
                param="quantization",
            )
        if (
            current is not None
            and current.backend == "transformers"
            and wanted not in ("auto", current.info.extra.get("quantization", "none"))
        ):
            self.unload(key)  # the same model in another precision
            current = None
        if current is None:
            with load_lock:
                with self._lock:
                    current = self._engines.get(key)
                if current is None:
                    current = self._load_engine(resolved, wanted, choice)
                    current.info.extra["engine_reason"] = choice.reason
                    if key != entry.id:
                        current.info.extra["engine_key"] = key
                    with self._lock:
                        self._engines[key] = current
                        self._gates[key] = EngineGate()
        if adapter:
            self.load_adapter_on(current, adapter, None)
        return current

    def _find(self, resolved: ResolvedModel, choice: EngineChoice) -> tuple[str, Engine | None]:
        """The key a model's engine is kept under, and the loaded engine serving this request (if any).

        One model may be loaded on several engines at once (e.g. transformers and llama.cpp, to compare them):
        the engine ``auto`` picks is kept under the model id, another one under ``<model id>@<engine>``. A
        request naming an engine (alias or load request) gets exactly that engine; an ``auto`` request takes the
        model's auto engine if loaded, else whichever engine already has the model loaded."""
        entry = resolved.entry
        if entry.format == "remote":
            key = entry.id
        elif choice.explicit:
            auto = choose_engine(entry, None, n_parallel=None)
            key = entry.id if auto.engine == choice.engine else f"{entry.id}@{choice.engine}"
        else:
            key = entry.id
        with self._lock:
            current = self._engines.get(key)
            if current is None and not choice.explicit:
                others = [k for k in self._engines if k.startswith(f"{entry.id}@")]
                if others:
                    key, current = others[0], self._engines[others[0]]
        return key, current

    def _hold(self, engine: Engine) -> AbstractContextManager[None]:
        """Hold ``engine`` for a generation or an adapter/attention call: shared when the engine serves several
        requests at once (it guards its own state), exclusive when it does not; an unload waits for all."""
        with self._lock:
            for key, loaded in self._engines.items():
                if loaded is engine:
                    return self._gates[key].hold(engine.capabilities.concurrent)
        raise NotFoundError(f"model '{engine.info.model_id}' was unloaded meanwhile", param="model")

    def _load_engine(self, resolved: ResolvedModel, quantization: str, choice: EngineChoice) -> Engine:
        entry = resolved.entry
        cp = resolved.alias.context_params if resolved.alias else None
        threads = (cp.n_threads if cp else None) or self.settings.threads
        dtype = (cp.dtype if cp else None) or self.settings.dtype
        if choice.engine == "remote":
            from studio.inference.remote_backend import RemoteEngine

            key_env = cp.api_key_env if cp else None
            return RemoteEngine(
                entry.id, entry.url or "", entry.repo or entry.id, api_key=os.environ.get(key_env) if key_env else None
            )
        if choice.engine == "llamacpp":
            from studio.inference.llamacpp_backend import LlamaCppEngine

            return LlamaCppEngine(
                entry.id,
                entry.path,
                n_ctx=cp.n_ctx if cp else None,
                # None: llama-cpp-python's default, half the CPUs. On the 2-vCPU machines 1 thread measured ~3x
                # faster than 2 (101-121 vs 33-39 tok/s, bench/serve.py): ggml's 2 threads fight everything else
                n_threads=threads,
                seed=cp.n_seed if cp else None,
                quant=entry.quant,
                options=cp.llamacpp_options() if cp else {},
            )
        if choice.engine == "onnxruntime":
            from studio.inference.onnx_backend import OnnxRuntimeEngine

            return OnnxRuntimeEngine(entry.id, entry.path, threads=threads, seed=cp.n_seed if cp else None)
        path = prepare_model(entry, self.settings.models_dir)
        if choice.engine == "vllm":
            if quantization not in ("none", "auto"):
                raise ValidationError(
                    "bitsandbytes quantization is a transformers feature; load with engine transformers",
                    param="quantization",
                )
            from studio.inference.vllm_backend import VllmEngine

            return VllmEngine(
                entry.id,
                path,
                log_dir=self.settings.home / "logs",
                dtype=dtype,
                n_ctx=cp.n_ctx if cp else None,
                n_parallel=cp.n_parallel if cp else None,
                seed=cp.n_seed if cp else None,
                threads=threads,
            )
        from studio.inference.torch_setup import import_torch
        from studio.inference.transformers_backend import TransformersEngine

        if quantization == "auto":
            est = self.estimate(entry.id, dtype=dtype)
            quantization = "none" if est.fits else est.suggestion.split(" ")[0]
            log.info("auto quantization for %s: %s (%s)", entry.id, quantization, est.summary())
        import_torch(threads)
        return TransformersEngine(
            entry.id,
            path,
            dtype=dtype,
            threads=threads,
            quantization=quantization,  # type: ignore[arg-type]
            max_parallel=cp.n_parallel if cp else None,
        )

    def estimate(self, name: str, *, dtype: str | None = None, quantization: str = "none") -> LoadEstimate:
        """How much memory loading ``name`` would take, and whether it fits (converts a GGUF once first)."""
        from studio.inference.torch_setup import import_torch, resolve_dtype

        if quantization not in ESTIMATE_QUANTIZATIONS:
            raise ValidationError(
                f"unknown quantization '{quantization}'; choose one of {', '.join(ESTIMATE_QUANTIZATIONS)}",
                param="quantization",
            )
        entry = self.resolver.resolve(name).entry
        if entry.format == "remote":
            raise ValidationError(
                f"'{name}' runs on its remote server ({entry.url}); there is no local memory to estimate", param="model"
            )
        path = prepare_model(entry, self.settings.models_dir)
        torch = import_torch()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dt = str(resolve_dtype(dtype or self.settings.dtype, device)).removeprefix("torch.")
        return estimate_load(path, dtype=dt, device=device, quantization=quantization)

    def engine(self, name: str, engine_name: str | None = None) -> Engine:
        """The loaded engine for ``name`` (no loading); NotFoundError when it is not loaded. ``name`` may also
        be a key of :meth:`loaded_keys` (``<model id>@<engine>``)."""
        with self._lock:
            engine = self._engines.get(name)
        if engine is None:
            resolved = self.resolver.resolve(name)
            _key, engine = self._find(resolved, self.choose_engine(resolved, engine_name))
        if engine is None:
            loaded = ", ".join(self._engines) or "none"
            raise NotFoundError(f"model '{name}' is not loaded; loaded: {loaded}", param="model")
        return engine

    def adapter_path(self, adapter: str) -> Path:
        """An adapter directory: a name under STUDIO_HOME/adapters, a path relative to STUDIO_HOME, or an absolute
        path inside the model roots (STUDIO_HOME, STUDIO_MODEL_DIRS, the Hugging Face cache). ``~`` is never
        expanded; a path outside the roots is refused (403) without looking at the disk, and messages name
        folders as ``$STUDIO_HOME/...`` only."""
        from studio.paths import describe_roots, find_user_path, model_roots

        home = self.settings.home
        bases = [home / "adapters", home]
        roots = model_roots(self.settings)
        where = describe_roots(roots if Path(adapter.strip()).is_absolute() else bases, self.settings)
        found = find_user_path(adapter, roots, param="adapter", bases=bases, where=where, kind="dir")
        return found.resolve()

    def load_adapter(self, model: str, adapter: str, name: str | None = None) -> str:
        """Load a PEFT adapter onto a loaded model (waits for its running generation) and make it active."""
        return self.load_adapter_on(self.engine(model), adapter, name)

    def load_adapter_on(self, engine: Engine, adapter: str, name: str | None = None) -> str:
        """Load a PEFT adapter onto this loaded ``engine`` (one model may be loaded on several engines)."""
        if not engine.capabilities.adapters:
            raise ValidationError(
                f"the {engine.backend} engine cannot load adapters; load the model on transformers or vllm",
                param="adapter",
            )
        path = self.adapter_path(adapter)
        # named as the user named it: a registered adapter is a symlink into runs/<job>/artifact, and the
        # resolved folder's name ("artifact") would name them all the same
        name = name or Path(adapter).name
        with self._hold(engine):
            return engine.load_adapter(path, name)  # type: ignore[attr-defined, no-any-return]

    def swap_adapter(self, model: str, adapter: str | None) -> str | None:
        """Hot-swap the active adapter without reloading the base: a loaded adapter's name, a new adapter
        path (loaded first), or None / 'base' for the base model. Returns the active adapter."""
        engine = self.engine(model)
        loaded: dict[str, Path] = getattr(engine, "adapters", {})
        if adapter in (None, "", "base") or adapter in loaded:
            with self._hold(engine):
                engine.set_active_adapter(adapter)  # type: ignore[attr-defined]
            return engine.active_adapter  # type: ignore[attr-defined, no-any-return]
        return self.load_adapter(model, str(adapter))

    def attention_for_reply(
        self,
        model: str,
        reply_token_ids: list[int],
        *,
        messages: Sequence[ChatMessage] | None = None,
        prompt_text: str | None = None,
        max_tokens: int = 256,
        adapter: str | None = None,
    ) -> Any:
        """Attention maps over the prompt (chat ``messages`` through the chat template, or a raw
        ``prompt_text``) plus the reply's tokens, recomputed with eager attention on the loaded model with
        ``adapter`` (None: the active one; 'base': none), taking its turn between the decode steps of running
        generations."""
        resolved = self.resolver.resolve(model)
        engine = self.engine(model)
        if not engine.capabilities.attention:
            raise ValidationError(
                f"the {engine.backend} engine cannot show attention maps; load the model with the transformers engine",
                param="model",
            )
        template = self.template_for(resolved.chat_template, resolved.entry)
        with self._hold(engine):
            if messages is not None:
                prompt_ids = engine.chat_token_ids(messages, template)  # type: ignore[attr-defined]
            elif prompt_text is not None:
                prompt_ids = engine.encode(prompt_text, special=True)  # type: ignore[attr-defined]
            else:
                raise ValidationError("generate a reply first: there is nothing to analyse", param="reply")
            return engine.attention(  # type: ignore[attr-defined]
                [*prompt_ids, *reply_token_ids], prompt_len=len(prompt_ids), max_tokens=max_tokens, adapter=adapter
            )

    def loaded(self) -> list[LoadedModelInfo]:
        with self._lock:
            return [e.info for e in self._engines.values()]

    def loaded_keys(self) -> list[str]:
        """Keys of the loaded engines: the model id, or ``<model id>@<engine>`` for a second engine."""
        with self._lock:
            return list(self._engines)

    def unload(self, name: str, engine_name: str | None = None) -> bool:
        """Unload a model (waits for its running generation). Returns False when it was not loaded."""
        with self._lock:
            key: str | None = name if name in self._engines else None
        if key is None:
            resolved = self.resolver.resolve(name)
            found, engine_found = self._find(resolved, self.choose_engine(resolved, engine_name))
            key = found if engine_found is not None else None
        if key is None:
            return False
        with self._lock:
            engine = self._engines.get(key)
            gate = self._gates.get(key)
        if engine is None or gate is None:
            return False
        with gate.exclusive():
            with self._lock:
                self._engines.pop(key, None)
            engine.unload()
        del engine
        release_memory()
        return True

    def drain(self, timeout_s: float, *, cancel_grace_s: float = 30.0) -> int:
        """Shut generation down in order: refuse new generations (503) from now on, let the running and waiting
        ones finish for up to ``timeout_s`` seconds, cancel the rest, and wait (up to ``cancel_grace_s``) for
        every worker thread to end -- each writes its request_log row before it does. Returns how many
        generations had to be cancelled."""
        self.admission.start_draining()
        deadline = time.monotonic() + max(0.0, timeout_s)
        handles = list(self._active.values())
        for handle in handles:
            handle.join(max(0.0, deadline - time.monotonic()))
        left = [h for h in list(self._active.values()) if not h.join(0)]
        for handle in left:
            handle.cancel()
        if left:
            log.info("shutdown: cancelling %d generation(s) still running after %.1fs", len(left), timeout_s)
        grace_end = time.monotonic() + cancel_grace_s
        for handle in left:
            if not handle.join(max(0.0, grace_end - time.monotonic())):
                log.warning("generation %s did not stop within %.0fs of its cancel", handle.id, cancel_grace_s)
        return len(left)

    def close(self, drain_timeout_s: float = 0.0) -> None:
        """Drain (see :meth:`drain`; by default cancel at once, still writing the request_log rows), then
        unload every model."""
        self.drain(drain_timeout_s)
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
        adapter: str | None = None,
        safety: bool | None = None,
    ) -> GenerationHandle:
        """Start a chat generation in the background and return its handle at once.

        ``owner`` tags the generation (e.g. a browser session) so :meth:`cancel_owner` can stop it.
        ``adapter``: a loaded adapter's name, 'base' for the base model, None for the active adapter.
        ``safety``: filter the prompt and the streamed reply with the safety policy (True/False), or None for
        the default: on when the alias carries a ``safety_policy``. A blocked prompt raises before anything runs.

        Raises at once, before any tokenising: PayloadTooLargeError (413) for messages over
        ``STUDIO_MAX_PROMPT_CHARS``, ValidationError for ``max_tokens`` over ``STUDIO_MAX_TOKENS_LIMIT``,
        RateLimitError (429) when the model's running and waiting places are all taken.
        """
        msgs = list(messages)
        self._check_prompt([m.content for m in msgs], "messages")
        self._check_max_tokens(params)
        resolved = self.resolver.resolve(model)
        template = self.template_for(resolved.chat_template, resolved.entry)
        guard, on_done, report = self._safety_for(resolved, msgs, safety)

        def run(e: Engine, c: threading.Event) -> Iterator[StreamItem]:
            items = (
                e.stream_chat(msgs, params, c, template)
                if adapter is None
                else e.stream_chat(msgs, params, c, template, adapter=adapter)  # type: ignore[call-arg]
            )
            return items if guard is None else guard_stream(items, guard, on_done)

        return self._with_report(self._start(resolved, endpoint, owner, run), report)

    @staticmethod
    def _with_report(handle: GenerationHandle, report: SafetyReport | None) -> GenerationHandle:
        if report is not None:
            report.extra["handle"] = handle  # first: on_done may already be running in the worker thread
            handle.result.safety = report.to_dict()
        return handle

    def _safety_for(
        self, resolved: ResolvedModel, msgs: list[ChatMessage], safety: bool | None
    ) -> tuple[Any, Callable[[Any], None], SafetyReport | None]:
        """The output guard for a chat (None when filtering is off), after checking (and masking) the last user
        message in place; the callback that stores the reply's findings on the handle's result."""
        policy = resolved.alias.safety_policy if resolved.alias is not None else None
        enabled = safety if safety is not None else policy is not None
        if not enabled:
            return None, lambda _result: None, None
        safety_filter = self.safety.filter_for(policy)
        # named as the Safety tab names it ($STUDIO_HOME/safety/x.yaml, configs/safety/x.yaml): no install path
        report = SafetyReport(policy=self.safety.policies.display(self.safety.policy_path(policy)))
        last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=None)
        if last_user is not None:
            checked = check_prompt(safety_filter, msgs[last_user].content)
            report.input = checked
            if checked.modified:
                msgs[last_user] = ChatMessage("user", checked.text)

        def on_done(result: Any) -> None:
            report.output = result
            handle = report.extra.get("handle")
            if handle is not None:
                handle.result.safety = report.to_dict()

        return safety_filter.output_guard(), on_done, report

    def compare_with_base(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams, adapter: str | None = None
    ) -> tuple[GenerationResult, GenerationResult]:
        """The same prompt with the adapter (the active one unless named) and with the base model, one after
        the other on the same weights: (adapter result, base result)."""
        name = self.comparison_adapter(model, adapter)
        with_adapter = self.start_chat(model, messages, params, endpoint="compare.adapter", adapter=name).wait()
        base = self.start_chat(model, messages, params, endpoint="compare.base", adapter="base").wait()
        return with_adapter, base

    def comparison_adapter(self, model: str, adapter: str | None = None) -> str:
        """The adapter :meth:`compare_with_base` compares with the base: ``adapter``, else the loaded model's
        active one; ValidationError when there is none."""
        engine = self.engine(model)
        name = adapter or getattr(engine, "active_adapter", None)
        if not name:
            raise ValidationError("no adapter is loaded on this model to compare with its base", param="adapter")
        return str(name)

    def start_alias_trial(
        self,
        alias: AliasConfig,
        messages: Sequence[ChatMessage],
        *,
        endpoint: str = "aliases.try",
        owner: str | None = None,
    ) -> GenerationHandle:
        """Generate with an alias configuration that is not saved (the Aliases tab's "Try"); limits as in
        :meth:`start_chat`."""
        self._check_prompt([m.content for m in messages], "messages")
        entry = self.resolver.entry_for(alias)
        params = self._check_max_tokens(make_sampling_params(**alias.request_params.sampling_overrides()))
        template = self.template_for(alias.chat_template, entry)
        resolved = ResolvedModel(entry, alias, "user")
        msgs = list(messages)
        return self._start(resolved, endpoint, owner, lambda e, c: e.stream_chat(msgs, params, c, template))

    def start_completion(
        self,
        model: str,
        prompt: str,
        params: SamplingParams,
        *,
        endpoint: str = "api",
        owner: str | None = None,
        adapter: str | None = None,
        safety: bool | None = None,
    ) -> GenerationHandle:
        """Start a raw-prompt completion (no chat template); ``safety`` and limits as in :meth:`start_chat`."""
        self._check_prompt([prompt], "prompt")
        self._check_max_tokens(params)
        resolved = self.resolver.resolve(model)
        msgs = [ChatMessage("user", prompt)]
        guard, on_done, report = self._safety_for(resolved, msgs, safety)
        text = msgs[0].content  # the prompt as the policy lets it through (masked)

        def run(e: Engine, c: threading.Event) -> Iterator[StreamItem]:
            items = (
                e.stream_completion(text, params, c)
                if adapter is None
                else e.stream_completion(text, params, c, adapter=adapter)  # type: ignore[call-arg]
            )
            return items if guard is None else guard_stream(items, guard, on_done)

        return self._with_report(self._start(resolved, endpoint, owner, run), report)

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams, *, safety: bool | None = None
    ) -> GenerationResult:
        """Generate a whole chat reply (blocking)."""
        return self.start_chat(model, messages, params, endpoint="python", safety=safety).wait()

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
        source, _stops = resolve_template_source(
            spec, model_dir=model_dir, hf_cache=self.settings.hf_cache_dir, settings=self.settings
        )
        if source is None:
            return None
        if spec.strip().lower() in BUILTIN_TEMPLATES:
            info = template_info(spec.strip().lower())
            return ChatTemplateSpec(source, info.bos_token, info.eos_token)
        return ChatTemplateSpec(source)

    def _admission_key(self, resolved: ResolvedModel) -> str:
        """The loaded-model key a generation counts against (``<model id>`` or ``<model id>@<engine>``)."""
        try:
            key, _engine = self._find(resolved, self.choose_engine(resolved))
        except StudioError:  # an engine that cannot serve: the worker reports that; count it on the model
            return resolved.entry.id
        return key

    def _start(
        self,
        resolved: ResolvedModel,
        endpoint: str,
        owner: str | None,
        run: Callable[[Engine, threading.Event], Iterator[StreamItem]],
    ) -> GenerationHandle:
        entry = resolved.entry  # resolved before any thread starts, so an unknown name fails fast (404)
        alias_name = resolved.alias.alias if resolved.alias is not None else entry.id
        cp = resolved.alias.context_params if resolved.alias else None
        # 429 here, before anything streams; an alias made for n_parallel streams runs that many at once
        principal = current_principal()
        user_slot = self.user_gate(principal) if self.user_gate is not None else None  # the user's quota: 429
        try:
            ticket = self.admission.admit(self._admission_key(resolved), cp.n_parallel if cp else None)
        except BaseException:
            if user_slot is not None:
                user_slot()
            raise
        user_id = principal.user_id if principal is not None else None
        handle = GenerationHandle(uuid.uuid4().hex, entry.id, threading.Event(), owner, alias_name)
        self._active[handle.id] = handle
        submitted = time.perf_counter()

        def worker() -> None:
            error: str | None = None
            try:
                if not self.admission.wait_turn(ticket, handle._cancel):
                    return  # cancelled while waiting for a place: it never ran, so it leaves no row
                engine = self.load_resolved(resolved)
                with self._hold(engine):
                    for item in run(engine, handle._cancel):
                        handle.result.add(item)
                        handle._queue.put(item)
            except StudioError as exc:
                error = str(exc)
                handle._queue.put(exc)
            except Exception as exc:
                log.exception("generation %s failed on %s", handle.id, entry.id)
                error = f"{type(exc).__name__}: {exc}"
                # the details (which may name files or internals) go to the log and the request_log row only
                handle._queue.put(
                    GenerationError(
                        f"generation failed on '{entry.id}' ({type(exc).__name__}); the server log has the "
                        f"details under request id {handle.id}"
                    )
                )
            finally:
                self.admission.release(ticket)
                if user_slot is not None:
                    user_slot()
                # recorded before the stream ends: whoever has consumed a generation finds its request_log row
                if self.on_finish is not None and handle.result.start is not None:
                    try:
                        self.on_finish(
                            FinishedGeneration(handle.id, entry.id, endpoint, handle.result, error, alias_name, user_id)
                        )
                    except Exception:
                        log.exception("could not record finished generation")
                self._active.pop(handle.id, None)
                handle._queue.put(_DONE)
            log.debug("generation %s took %.2fs", handle.id, time.perf_counter() - submitted)

        handle._worker = threading.Thread(target=worker, name=f"gen-{handle.id[:8]}", daemon=True)
        try:
            handle._worker.start()
        except BaseException:  # no thread (resource exhaustion): give the place back
            self._active.pop(handle.id, None)
            self.admission.release(ticket)
            if user_slot is not None:
                user_slot()
            raise
        return handle
