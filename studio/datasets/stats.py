"""Token-length statistics of a dataset version: summary figures and a histogram for the dataset card."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from studio.errors import ValidationError

HISTOGRAM_BINS = 20


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
