"""A deterministic fake engine for API tests that need no model: it answers "tok tok tok ..." (``max_tokens``
tokens, ``delay`` seconds each), stops between tokens when cancelled, and records what it was asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from studio.context import AppContext
from studio.inference.base import (
    ChatMessage,
    ChatTemplateSpec,
    Engine,
    EngineCapabilities,
    GenerationEnd,
    GenerationStart,
    LoadedModelInfo,
    StreamItem,
    TokenEvent,
)
from studio.inference.params import SamplingParams


class SlowFakeEngine(Engine):
    backend = "fake"
    capabilities = EngineCapabilities(logprobs=True, concurrent=True)

    def __init__(self, model_id: str = "fake", delay: float = 0.01) -> None:
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()
        self._info = LoadedModelInfo(model_id, self.backend, Path("."), "float32", "cpu", 0, 0, 0.0)

    @property
    def info(self) -> LoadedModelInfo:
        return self._info

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        return self._run(" ".join(m.content for m in messages), params, cancel)

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        return self._run(prompt, params, cancel)

    def _run(self, prompt: str, params: SamplingParams, cancel: threading.Event) -> Iterator[StreamItem]:
        self.calls.append({"prompt": prompt, "max_tokens": params.max_tokens})
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            yield GenerationStart(prompt_tokens=len(prompt.split()), started=time.perf_counter())
            for i in range(params.max_tokens):
                if cancel.is_set():
                    yield GenerationEnd("cancelled", time=time.perf_counter())
                    return
                time.sleep(self.delay)
                yield TokenEvent(i, " tok", " tok" if i else "tok", -0.5, (), time.perf_counter())
            yield GenerationEnd("length", time=time.perf_counter())
        finally:
            with self._lock:
                self.running -= 1

    def unload(self) -> None:
        pass


def serve_fake(ctx: AppContext, delay: float = 0.01) -> SlowFakeEngine:
    """Make model 'default' (and its id) answer with a fresh fake engine on ``ctx``."""
    engine = SlowFakeEngine(ctx.engines.resolve("default").entry.id, delay)
    ctx.engines.adopt_engine("default", engine)
    return engine
