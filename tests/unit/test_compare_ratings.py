"""Rating and agreement math against hand-computed and textbook values."""

from __future__ import annotations

import math

import pytest

from studio.compare.agreement import (
    agreement_by_annotator,
    cohen_kappa,
    krippendorff_alpha,
    pairwise_preferences,
)
from studio.compare.ratings import Outcome, bootstrap_ratings, bradley_terry, elo_ratings, win_rate_matrix


def test_elo_updates_match_hand_computation() -> None:
    # 1000 vs 1000, A wins: E=0.5, A += 32*0.5 → 1016, B → 984
    first = elo_ratings([Outcome("A", "B", 1.0)])
    assert first == {"A": 1016.0, "B": 984.0}
    # then B wins: E_B = 1/(1+10^((1016-984)/400)) = 0.454078..., B += 32*(1-0.454078) = 17.4695
    second = elo_ratings([Outcome("A", "B", 1.0), Outcome("A", "B", 0.0)])
    assert second["B"] == pytest.approx(984 + 32 * (1 - 1 / (1 + 10 ** (32 / 400))), abs=1e-9)
    assert second["A"] + second["B"] == pytest.approx(2000.0)  # Elo is zero-sum
    tie = elo_ratings([Outcome("A", "B", 0.5)])
    assert tie == {"A": 1000.0, "B": 1000.0}


def test_bradley_terry_mle_matches_hand_computation() -> None:
    # A beats B 3 times out of 4: the MLE odds are 3:1, so the gap is 400*log10(3) = 190.85 around 1000
    outcomes = [Outcome("A", "B", 1.0)] * 3 + [Outcome("B", "A", 1.0)]
    ratings = bradley_terry(outcomes, prior=0)
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert ratings["A"] == pytest.approx(1000 + 200 * math.log10(3), abs=1e-6)
    # a tie is half a win each: A has 2 wins + 2 ties + 1 loss = 3 points, B 2 points → odds 3:2
    with_ties = [Outcome("A", "B", 1.0)] * 2 + [Outcome("A", "B", 0.5)] * 2 + [Outcome("A", "B", 0.0)]
    r = bradley_terry(with_ties, prior=0)
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3 / 2), abs=1e-6)


def test_bradley_terry_three_players_is_consistent_and_prior_keeps_unbeaten_finite() -> None:
    # a cycle with equal records: everyone rates the same
    cycle = [Outcome("A", "B", 1.0), Outcome("B", "C", 1.0), Outcome("C", "A", 1.0)]
    assert all(v == pytest.approx(1000.0) for v in bradley_terry(cycle, prior=0).values())
    with pytest.raises(ValueError, match="unbounded"):
        bradley_terry([Outcome("A", "B", 1.0)], prior=0)
    one = bradley_terry([Outcome("A", "B", 1.0)], prior=1.0)
    assert one["A"] > 1000 > one["B"] and math.isfinite(one["A"])
    # prior 1 = one virtual tie each with a reference of strength 1: A scores 1 + 0.5. By symmetry p_B = 1/p_A = 1/x,
    # and the likelihood equation for A is 1.5 = x²/(x²+1) + x/(x+1); solve it by bisection
    lo, hi = 1.0, 10.0
    for _ in range(200):
        x = (lo + hi) / 2
        lo, hi = (x, hi) if x * x / (x * x + 1) + x / (x + 1) < 1.5 else (lo, x)
    assert one["A"] == pytest.approx(1000 + 400 * math.log10(x), abs=1e-4)
    assert one["A"] + one["B"] == pytest.approx(2000.0)


def test_bootstrap_interval_contains_point_and_is_reproducible() -> None:
    outcomes = [Outcome("A", "B", 1.0)] * 6 + [Outcome("A", "B", 0.0)] * 2 + [Outcome("B", "C", 1.0)] * 5
    first = bootstrap_ratings(outcomes, rounds=100, seed=1)
    again = bootstrap_ratings(outcomes, rounds=100, seed=1)
    assert first == again
    assert [r.name for r in first] == ["A", "B", "C"]
    for r in first:
        assert r.ci_low is not None and r.ci_high is not None
        assert r.ci_low <= r.rating <= r.ci_high
    assert bootstrap_ratings(outcomes, rounds=0)[0].ci_low is None


def test_too_few_battles_give_no_zero_width_interval_but_say_so() -> None:
    """Issue 15, point 6: one battle read "1131 – 1131" -- every resample of one battle is that battle, so the
    bootstrap shows no spread because it has nothing to resample, not because the rating is certain."""
    for rating in bootstrap_ratings([Outcome("A", "B", 1.0)], rounds=200, seed=0):
        assert (rating.ci_low, rating.ci_high, rating.ci_note, rating.battles) == (None, None, "n too small", 1)
    # unanimous votes: the resamples never disagree either
    unanimous = bootstrap_ratings([Outcome("A", "B", 1.0)] * 6, rounds=200, seed=0, min_battles=3)
    assert all(r.ci_low is None and r.ci_note == "n too small" for r in unanimous)
    # a contender with one battle among many: its interval would only count how often that battle was drawn
    outcomes = [Outcome("A", "B", 1.0)] * 4 + [Outcome("A", "B", 0.0)] * 3 + [Outcome("B", "C", 1.0)]
    by_name = {r.name: r for r in bootstrap_ratings(outcomes, rounds=200, seed=0, min_battles=3)}
    assert by_name["C"].ci_low is None and by_name["C"].ci_note == "n too small" and by_name["C"].battles == 1
    assert by_name["A"].ci_low is not None and by_name["A"].ci_high is not None
    assert by_name["A"].ci_high - by_name["A"].ci_low > 1 and by_name["A"].ci_note is None


def test_win_rate_matrix() -> None:
    outcomes = [Outcome("A", "B", 1.0), Outcome("B", "A", 0.5), Outcome("A", "B", 0.0), Outcome("A", "B", 1.0)]
    m = win_rate_matrix(outcomes, ["A", "B", "C"])
    assert m[0][1] == pytest.approx(2.5 / 4) and m[1][0] == pytest.approx(1.5 / 4)
    assert m[0][0] is None and m[0][2] is None and m[2][0] is None


def test_cohen_kappa_textbook_value() -> None:
    # Wikipedia's example: 50 proposals, both yes 20, A yes/B no 5, A no/B yes 10, both no 15 → kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement is 1: undefined
    assert cohen_kappa([], []) is None


def test_krippendorff_alpha_textbook_values() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units, missing data;
    # nominal alpha 0.743, interval alpha 0.849
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = list(zip(*observers, strict=True))
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, None], [None, 2]]) is None  # nothing pairable


def test_rankings_become_pairwise_preferences_and_agreement() -> None:
    assert pairwise_preferences(3, order=[2, 0, 1]) == {(0, 1): 1, (0, 2): -1, (1, 2): -1}
    assert pairwise_preferences(3, scores=[7, 7, 1]) == {(0, 1): 0, (0, 2): 1, (1, 2): 1}
    labels = {
        "ann": {("i", 0, 1): 1, ("i", 0, 2): 1, ("i", 1, 2): 1, ("j", 0, 1): -1},
        "bob": {("i", 0, 1): 1, ("i", 0, 2): 1, ("i", 1, 2): -1, ("j", 0, 1): -1},
        "cy": {("k", 0, 1): 1},
    }
    pairs, per, alpha = agreement_by_annotator(labels)
    # ann vs bob on 4 shared units: agree on 3; p_o=0.75, p_e=(3*2+1*2)/16=0.5 → kappa 0.5
    assert pairs[("ann", "bob")] == (pytest.approx(0.5), 4)
    assert pairs[("ann", "cy")] == (None, 0)
    assert per["ann"] == (pytest.approx(0.5), 4) and per["cy"] == (None, 0)
    assert alpha is not None and alpha < 1
