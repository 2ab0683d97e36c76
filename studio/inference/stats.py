"""Figures about one generation, computed only from the timestamps the engine stamped on its tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from studio.inference.base import GenerationEnd, GenerationStart, StreamItem, TokenEvent


@dataclass
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None  # prompt processing start → first generated token (model loading excluded)
    tokens_per_s: float | None  # decode speed: tokens after the first / time between first and last token
    total_s: float
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: 'prompt 31 tok · completion 8 tok · TTFT 120 ms · 48.2 tok/s · stop'."""
        ttft = f"{self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "–"
        tps = f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s is not None else "– tok/s"
        return (
            f"prompt {self.prompt_tokens} tok · completion {self.completion_tokens} tok · "
            f"TTFT {ttft} · {tps} · total {self.total_s:.2f} s · finish: {self.finish_reason}"
        )


@dataclass
class GenerationResult:
    """Accumulates a stream; ``text`` is exactly the concatenation of every streamed piece."""

    text: str = ""
    tokens: list[TokenEvent] = field(default_factory=list)
    start: GenerationStart | None = None
    end: GenerationEnd | None = None
    safety: dict[str, Any] | None = None  # what the safety layer found and did (studio.safety.service)

    def add(self, item: StreamItem) -> str:
        """Record one stream item; return the text it adds to the reply ('' for none)."""
        if isinstance(item, GenerationStart):
            self.start = item
            return ""
        if isinstance(item, TokenEvent):
            self.tokens.append(item)
            self.text += item.text
            return item.text
        self.end = item
        self.text += item.tail_text
        return item.tail_text

    @property
    def finished(self) -> bool:
        return self.end is not None

    @property
    def stats(self) -> GenerationStats:
        return compute_stats(self.start, self.tokens, self.end)


def compute_stats(
    start: GenerationStart | None, tokens: list[TokenEvent], end: GenerationEnd | None
) -> GenerationStats:
    if start is None:
        raise ValueError("no GenerationStart seen")
    n = len(tokens)
    ttft = tokens[0].time - start.started if n else None
    tps = (n - 1) / (tokens[-1].time - tokens[0].time) if n > 1 and tokens[-1].time > tokens[0].time else None
    last = end.time if end is not None and end.time else (tokens[-1].time if n else start.started)
    return GenerationStats(
        prompt_tokens=start.prompt_tokens,
        completion_tokens=n,
        ttft_s=ttft,
        tokens_per_s=tps,
        total_s=max(0.0, last - start.started),
        finish_reason=end.finish_reason if end is not None else "running",
    )
