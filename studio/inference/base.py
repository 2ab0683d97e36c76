"""The engine interface every backend implements, and the token events it streams.

A backend turns a chat (or a raw prompt) plus :class:`SamplingParams` into a stream of
:class:`TokenEvent`s, each stamped with ``time.perf_counter()`` when the token was produced; callers
compute time-to-first-token and tokens/s from those stamps (:func:`studio.inference.stats.compute_stats`).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from studio.inference.params import SamplingParams

FinishReason = Literal["stop", "length", "cancelled", "content_filter"]


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatTemplateSpec:
    """A chat template chosen by an alias. ``bos_token``/``eos_token`` None → the tokenizer's own."""

    source: str
    bos_token: str | None = None
    eos_token: str | None = None


@dataclass(frozen=True)
class TopLogprob:
    token: str
    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenEvent:
    """One generated token.

    ``text`` is the new visible text this token releases (possibly empty: text that may still turn into a
    stop sequence, or an incomplete UTF-8 character, is held back and released with a later token).
    ``token`` is the token's own decoded text, as OpenAI's ``logprobs.content[].token``.
    """

    token_id: int
    token: str
    text: str
    logprob: float
    top_logprobs: tuple[TopLogprob, ...]
    time: float


@dataclass
class GenerationStart:
    """What the backend knows before the first token: prompt size and when the request began."""

    prompt_tokens: int
    started: float


@dataclass
class GenerationEnd:
    finish_reason: FinishReason
    tail_text: str = ""  # held-back text released at the end (never part of a stop sequence)
    time: float = 0.0


@dataclass(frozen=True)
class EngineCapabilities:
    logprobs: bool = True
    attention: bool = False
    adapters: bool = False
    chat_template: bool = True
    # serves several requests at once (batching, or interleaved decode steps) and guards its own state; else the
    # manager serialises its generations
    concurrent: bool = False


@dataclass
class LoadedModelInfo:
    model_id: str
    backend: str
    path: Path
    dtype: str
    device: str
    parameters: int
    memory_bytes: int
    load_seconds: float
    extra: dict[str, str] = field(default_factory=dict)


StreamItem = GenerationStart | TokenEvent | GenerationEnd


class Engine(abc.ABC):
    """A loaded model that can generate. Implementations must be safe to call from several threads:
    :class:`studio.inference.manager.EngineManager` serialises generation per engine unless its capabilities say
    ``concurrent``, but ``info`` and ``count_tokens`` may run concurrently with it."""

    backend: str = "abstract"
    capabilities: EngineCapabilities = EngineCapabilities()

    @property
    @abc.abstractmethod
    def info(self) -> LoadedModelInfo: ...

    @abc.abstractmethod
    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
    ) -> Iterator[StreamItem]:
        """Yield one :class:`GenerationStart`, then :class:`TokenEvent`s, then one :class:`GenerationEnd`.

        ``cancel`` is checked between tokens; when set the stream ends with finish reason ``cancelled``.
        ``chat_template`` replaces the model's own template when given.
        """

    @abc.abstractmethod
    def stream_completion(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event,
    ) -> Iterator[StreamItem]:
        """Like :meth:`stream_chat` for a raw prompt (no chat template)."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Free the model's memory. The engine must not be used afterwards."""
