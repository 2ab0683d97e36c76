"""Agreement between annotators: Cohen's kappa for two annotators, Krippendorff's alpha overall.

Rankings are compared as pairwise preferences: each annotation (an order, or 1-7 scores) of an item with
candidates 0..N-1 gives, for every pair i < j, the label +1 (i preferred), -1 (j preferred) or 0 (equal
scores). A *unit* is one (item, i, j); two annotators agree on a unit when their labels are equal. This makes
orders and scores comparable and weighs an item by how many preferences it holds.

* Per pair of annotators: **Cohen's kappa** over the units both labelled, ``(p_o - p_e) / (1 - p_e)``.
* Per annotator: the mean of their kappas with every other annotator, weighted by shared units.
* Overall: **Krippendorff's alpha** (nominal metric) over all units and annotators; it allows any number of
  annotators per unit and missing judgements. (Fleiss' kappa would need the same number of raters per unit.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from itertools import permutations
from typing import Any, Literal

Metric = Literal["nominal", "interval"]


def cohen_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two annotators' labels of the same units (same order). None when undefined: no units,
    or both always gave one and the same label (chance agreement is 1)."""
    if len(labels_a) != len(labels_b):
        raise ValueError("both annotators must label the same units")
    n = len(labels_a)
    if n == 0:
        return None
    observed = sum(1 for a, b in zip(labels_a, labels_b, strict=True) if a == b) / n
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _delta(c: Hashable, k: Hashable, metric: Metric) -> float:
    if metric == "nominal":
        return 0.0 if c == k else 1.0
    return (float(c) - float(k)) ** 2  # type: ignore[arg-type]


def krippendorff_alpha(units: Sequence[Sequence[Hashable | None]], metric: Metric = "nominal") -> float | None:
    """Krippendorff's alpha. ``units[u]`` holds each annotator's value for unit ``u`` (None = not annotated).

    Built from the coincidence matrix: units with fewer than two values are not pairable and are skipped.
    None when undefined (fewer than two pairable values, or no variation at all).
    """
    coincidence: dict[tuple[Hashable, Hashable], float] = {}
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for x, y in permutations(range(m), 2):
            key = (values[x], values[y])
            coincidence[key] = coincidence.get(key, 0.0) + 1.0 / (m - 1)
    totals: dict[Hashable, float] = {}
    for (c, _k), weight in coincidence.items():
        totals[c] = totals.get(c, 0.0) + weight
    n = sum(totals.values())
    if n < 2:
        return None
    observed = sum(w * _delta(c, k, metric) for (c, k), w in coincidence.items()) / n
    expected = sum(totals[c] * totals[k] * _delta(c, k, metric) for c in totals for k in totals) / (n * (n - 1))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def pairwise_preferences(
    n_candidates: int, *, order: Sequence[int] | None = None, scores: Sequence[int] | None = None
) -> dict[tuple[int, int], int]:
    """One annotation as pairwise labels ``{(i, j): +1 | 0 | -1}`` for i < j (see the module docstring)."""
    if order is not None:
        rank = {cand: pos for pos, cand in enumerate(order)}
        value = [-rank[c] for c in range(n_candidates)]  # higher is better
    elif scores is not None:
        value = list(scores)
    else:
        raise ValueError("an annotation has an order or scores")
    out: dict[tuple[int, int], int] = {}
    for i in range(n_candidates):
        for j in range(i + 1, n_candidates):
            out[(i, j)] = (value[i] > value[j]) - (value[i] < value[j])
    return out


def agreement_by_annotator(
    labels: Mapping[str, Mapping[Any, Any]],
) -> tuple[dict[tuple[str, str], tuple[float | None, int]], dict[str, tuple[float | None, int]], float | None]:
    """``labels[annotator][unit] = label`` → (kappa and shared units per annotator pair, weighted mean kappa and
    shared units per annotator, Krippendorff's alpha overall)."""
    names = sorted(labels)
    pairs: dict[tuple[str, str], tuple[float | None, int]] = {}
    for x, a in enumerate(names):
        for b in names[x + 1 :]:
            units = sorted(set(labels[a]) & set(labels[b]), key=repr)
            kappa = cohen_kappa([labels[a][u] for u in units], [labels[b][u] for u in units])
            pairs[(a, b)] = (kappa, len(units))
    per: dict[str, tuple[float | None, int]] = {}
    for name in names:
        weighted, weight = 0.0, 0
        for (a, b), (kappa, shared) in pairs.items():
            if name in (a, b) and kappa is not None and shared:
                weighted += kappa * shared
                weight += shared
        per[name] = (weighted / weight if weight else None, weight)
    all_units = sorted({u for by in labels.values() for u in by}, key=repr)
    table = [[labels[name].get(u) for name in names] for u in all_units]
    return pairs, per, krippendorff_alpha(table, "nominal")
