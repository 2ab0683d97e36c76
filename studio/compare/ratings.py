"""Ratings from pairwise battles: Bradley–Terry with bootstrap confidence intervals (the leaderboard's ranking),
and online Elo (shown beside it, as Chatbot Arena first did).

Outcomes: a win scores 1, a loss 0, a tie 0.5 for each side; "both bad" counts as a tie (neither model was
preferred). Battles of a contender against itself are ignored.

Bradley–Terry: P(i beats j) = p_i / (p_i + p_j). Strengths are the maximum-likelihood estimate found with
Hunter's MM algorithm (ties enter as half a win for each side). A weak prior -- ``prior`` virtual ties of every
contender against a fixed reference player of strength 1 -- keeps the estimate finite for a contender that has
won (or lost) every battle; ``prior=0`` gives the plain MLE. Strengths are reported on the Elo scale:
``base + 400 * log10(p_i / geometric mean of p)``, so the average rating is ``base`` and a 400-point gap
means 10:1 odds. Confidence intervals: percentiles of the ratings over ``rounds`` bootstrap resamples of the
battles (with replacement, fixed seed). The bootstrap can only show the spread the votes have: a contender with
fewer than ``min_battles`` battles, or whose resampled ratings never differ (one battle, or votes that all went
one way), gets no interval but the note "n too small" -- a zero-width interval would read as certainty.

Elo: every contender starts at ``base``; after each battle, in time order,
``R_a += k * (S_a - E_a)`` with ``E_a = 1 / (1 + 10 ** ((R_b - R_a) / 400))`` (and the mirror for b).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One battle: contender ``a`` against ``b``; ``score_a`` is 1 (a won), 0 (b won) or 0.5 (tie)."""

    a: str
    b: str
    score_a: float


@dataclass(frozen=True)
class Rating:
    """One contender's Bradley–Terry rating with its confidence interval (None when not estimable; ``ci_note``
    then says why when it is the votes, not the settings) and the battles it is based on."""

    name: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    ci_note: str | None = None
    battles: int = 0


def elo_ratings(outcomes: Iterable[Outcome], *, k: float = 32.0, base: float = 1000.0) -> dict[str, float]:
    """Online Elo ratings after playing ``outcomes`` in order (see the module docstring)."""
    ratings: dict[str, float] = {}
    for o in outcomes:
        if o.a == o.b:
            continue
        ra, rb = ratings.setdefault(o.a, base), ratings.setdefault(o.b, base)
        expected_a = 1.0 / (1.0 + 10 ** ((rb - ra) / 400.0))
        ratings[o.a] = ra + k * (o.score_a - expected_a)
        ratings[o.b] = rb + k * ((1.0 - o.score_a) - (1.0 - expected_a))
    return ratings


def _tables(outcomes: Iterable[Outcome]) -> tuple[list[str], dict[tuple[int, int], float], dict[tuple[int, int], int]]:
    """Contender names, and per ordered pair the score of the first against the second and the games played."""
    names: dict[str, int] = {}
    wins: dict[tuple[int, int], float] = {}
    games: dict[tuple[int, int], int] = {}
    for o in outcomes:
        if o.a == o.b:
            continue
        i, j = names.setdefault(o.a, len(names)), names.setdefault(o.b, len(names))
        wins[(i, j)] = wins.get((i, j), 0.0) + o.score_a
        wins[(j, i)] = wins.get((j, i), 0.0) + 1.0 - o.score_a
        games[(i, j)] = games.get((i, j), 0) + 1
        games[(j, i)] = games.get((j, i), 0) + 1
    return list(names), wins, games


def bradley_terry(
    outcomes: Iterable[Outcome],
    *,
    prior: float = 1.0,
    base: float = 1000.0,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> dict[str, float]:
    """Bradley–Terry ratings on the Elo scale (see the module docstring).

    With ``prior=0`` every contender must have at least one win and one loss (else its MLE is infinite):
    ``ValueError`` says which one has not.
    """
    names, wins, games = _tables(outcomes)
    n = len(names)
    if n == 0:
        return {}
    total_wins = [sum(w for (i, _j), w in wins.items() if i == x) + prior / 2 for x in range(n)]
    if prior <= 0:
        for x in range(n):
            played = sum(g for (i, _j), g in games.items() if i == x)
            if total_wins[x] <= 0 or total_wins[x] >= played:
                raise ValueError(f"'{names[x]}' has won all or none of its battles; its strength is unbounded")
    neighbours: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for (i, j), g in games.items():
        neighbours[i].append((j, g))
    p = [1.0] * n
    for _ in range(max_iter):
        new = []
        for x in range(n):
            denom = sum(g / (p[x] + p[y]) for y, g in neighbours[x]) + (prior / (p[x] + 1.0) if prior > 0 else 0.0)
            new.append(total_wins[x] / denom)
        if prior <= 0:  # only ratios are identified: keep the geometric mean at 1
            scale = math.exp(sum(math.log(v) for v in new) / n)
            new = [v / scale for v in new]
        change = max(abs(math.log(a) - math.log(b)) for a, b in zip(new, p, strict=True))
        p = new
        if change < tol:
            break
    mean_log = sum(math.log10(v) for v in p) / n
    return {name: base + 400.0 * (math.log10(p[x]) - mean_log) for x, name in enumerate(names)}


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..1) of sorted ``values``."""
    pos = q * (len(values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


TOO_FEW = "n too small"


def bootstrap_ratings(
    outcomes: Sequence[Outcome],
    *,
    rounds: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    prior: float = 1.0,
    base: float = 1000.0,
    min_battles: int = 3,
) -> list[Rating]:
    """Bradley–Terry ratings with percentile bootstrap intervals, best first.

    A contender absent from some resamples gets its interval from the resamples it appears in; with fewer than
    two usable resamples (or ``rounds=0``) the interval is None. So it is, with ``ci_note`` "n too small", for a
    contender with fewer than ``min_battles`` battles or whose resampled ratings all agree (see the module
    docstring).
    """
    battles: dict[str, int] = {}
    for o in outcomes:
        if o.a != o.b:
            battles[o.a] = battles.get(o.a, 0) + 1
            battles[o.b] = battles.get(o.b, 0) + 1
    point = bradley_terry(outcomes, prior=prior, base=base)
    samples: dict[str, list[float]] = {name: [] for name in point}
    if outcomes and rounds > 0:
        rng = random.Random(seed)
        for _ in range(rounds):
            resample = [outcomes[rng.randrange(len(outcomes))] for _ in outcomes]
            for name, value in bradley_terry(resample, prior=prior, base=base).items():
                samples[name].append(value)
    tail = (1.0 - confidence) / 2
    out = []
    for name, value in point.items():
        values = sorted(samples[name])
        n = battles.get(name, 0)
        if len(values) < 2:
            out.append(Rating(name, value, None, None, None, n))
            continue
        low, high = _percentile(values, tail), _percentile(values, 1.0 - tail)
        if n < min_battles or math.isclose(values[0], values[-1], rel_tol=0.0, abs_tol=1e-6):
            out.append(Rating(name, value, None, None, TOO_FEW, n))
        else:
            out.append(Rating(name, value, low, high, None, n))
    return sorted(out, key=lambda r: (-r.rating, r.name))


def win_rate_matrix(outcomes: Iterable[Outcome], order: Sequence[str]) -> list[list[float | None]]:
    """``matrix[i][j]``: the share of battles ``order[i]`` won against ``order[j]`` (ties count half);
    None where the two never met (and on the diagonal)."""
    names, wins, games = _tables(outcomes)
    index = {name: x for x, name in enumerate(names)}
    matrix: list[list[float | None]] = []
    for a in order:
        row: list[float | None] = []
        for b in order:
            i, j = index.get(a), index.get(b)
            if i is None or j is None or i == j or not games.get((i, j)):
                row.append(None)
                continue
            row.append(wins[(i, j)] / games[(i, j)])
        matrix.append(row)
    return matrix
