"""Statistics of a dataset version for its card: token lengths (summary figures and a histogram) and the language
mix (how many examples are in each language, from the offline language identifier on each example's text)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from studio.errors import ValidationError

HISTOGRAM_BINS = 20
#: examples identified per version: all of them up to this many, an even sample of a larger version (a few ms each)
LANGUAGE_SAMPLE = 2000
#: languages a summary names before "+ N more"
SUMMARY_LANGUAGES = 4


class Histogram(BaseModel):
    """Equal-width bins: ``counts[i]`` examples have a length in ``[edges[i], edges[i + 1])`` (last bin closed)."""

    edges: list[float]
    counts: list[int]


class TokenStats(BaseModel):
    """Lengths of a version's examples in tokens, with a model's chat template applied."""

    tokenizer: str
    count: int
    min: int
    mean: float
    p50: float
    p95: float
    max: int
    total: int
    histogram: Histogram
    max_length: int | None = None
    over_max_length: int | None = Field(default=None, description="Examples longer than max_length, if given.")


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of sorted values."""
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def histogram(values: Sequence[int], bins: int = HISTOGRAM_BINS) -> Histogram:
    """Equal-width histogram of ``values`` over ``[min, max]`` (one bin when all are equal)."""
    lo, hi = min(values), max(values)
    if lo == hi:
        return Histogram(edges=[float(lo), float(hi)], counts=[len(values)])
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return Histogram(edges=[lo + i * width for i in range(bins + 1)], counts=counts)


def compute_token_stats(
    lengths: Sequence[int], tokenizer_name: str, max_length: int | None = None, bins: int = HISTOGRAM_BINS
) -> TokenStats:
    """Summary figures and a histogram of token lengths."""
    if not lengths:
        raise ValidationError("a dataset version without examples has no token statistics", param="version")
    ordered = sorted(lengths)
    return TokenStats(
        tokenizer=tokenizer_name,
        count=len(ordered),
        min=ordered[0],
        mean=sum(ordered) / len(ordered),
        p50=_percentile(ordered, 50),
        p95=_percentile(ordered, 95),
        max=ordered[-1],
        total=sum(ordered),
        histogram=histogram(ordered, bins),
        max_length=max_length,
        over_max_length=None if max_length is None else sum(1 for n in ordered if n > max_length),
    )


class LanguageMix(BaseModel):
    """How many of a version's examples are in each language (ISO 639-1 codes; ``und``: too little text to tell),
    most common first. ``rows`` examples were identified out of ``total`` (an even sample beyond
    ``LANGUAGE_SAMPLE``)."""

    counts: dict[str, int]
    rows: int
    total: int

    def ranked(self) -> list[tuple[str, int]]:
        """``(code, count)`` most common first, ties by code (stored JSON may not keep the order)."""
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))

    def shares(self) -> list[tuple[str, float]]:
        """``(code, percent of the identified rows)``, most common first."""
        return [(code, 100 * n / self.rows) for code, n in self.ranked()] if self.rows else []

    def summary(self, top: int = SUMMARY_LANGUAGES) -> str:
        """``"en 92% · hi 8%"``; a share under 1% reads ``<1%``, languages past ``top`` are counted at the end, and
        a sampled version says so."""
        shares = self.shares()
        if not shares:
            return "no text to identify"
        parts = [f"{code} {_percent(p)}" for code, p in shares[:top]]
        if len(shares) > top:
            parts.append(f"+{len(shares) - top} more")
        text = " · ".join(parts)
        if self.rows < self.total:
            text += f" (a sample of {self.rows} of {self.total} examples)"
        return text


def _percent(p: float) -> str:
    if 0 < p < 1:
        return "<1%"
    return f"{p:.0f}%"


def example_text(example: Mapping[str, Any]) -> str:
    """The words of a canonical example whose language counts: every user and assistant message (the prompt and,
    for a preference pair, both replies); system prompts and tool output are left out (a Hindi dataset often keeps
    an English system prompt)."""
    parts: list[str] = []
    messages = example.get("messages") or example.get("prompt") or []
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") in ("user", "assistant"):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
    for key in ("completion", "chosen", "rejected"):
        value = example.get(key)
        if isinstance(value, str):
            parts.append(value)
    return "\n".join(parts)


def compute_language_mix(examples: Sequence[Mapping[str, Any]], sample: int = LANGUAGE_SAMPLE) -> LanguageMix:
    """The language mix of ``examples`` (each example's :func:`example_text` through the offline identifier),
    over all of them or an even sample of ``sample``."""
    from studio.curation.language import language_mix

    total = len(examples)
    picked = examples if total <= sample else [examples[i * total // sample] for i in range(sample)]
    counts = language_mix(example_text(e) for e in picked)
    return LanguageMix(counts=counts, rows=len(picked), total=total)
