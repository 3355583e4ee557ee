"""infopt/stats.py against hand-computed values and crafted predictions whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from infopt.stats import (
    Interval,
    macro_f1,
    macro_f1_interval,
    mcnemar_exact_p,
    non_inferior,
    paired_difference,
    unpaired_difference,
    wilson_interval,
)


def test_wilson_interval_of_81_in_100_matches_the_textbook_value() -> None:
    # Hand computation (z = 1.959964): centre 0.798532, margin 0.076321.
    interval = wilson_interval(81, 100, 0.95)
    assert interval.estimate == pytest.approx(0.81)
    assert interval.low == pytest.approx(0.7222, abs=1e-4)
    assert interval.high == pytest.approx(0.8749, abs=1e-4)


def test_unpaired_difference_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    interval = unpaired_difference(56, 70, 48, 80, 0.95)
    assert interval.estimate == pytest.approx(0.2)
    assert interval.low == pytest.approx(0.0524, abs=1e-4)
    assert interval.high == pytest.approx(0.3339, abs=1e-4)


def test_unpaired_difference_is_antisymmetric() -> None:
    ab, ba = unpaired_difference(900, 1000, 850, 1000), unpaired_difference(850, 1000, 900, 1000)
    assert (ab.low, ab.high) == pytest.approx((-ba.high, -ba.low))


def test_wilson_interval_stays_inside_zero_and_one_at_the_edges() -> None:
    assert wilson_interval(0, 50).low == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(0, 50).high == pytest.approx(0.0713, abs=1e-4)
    assert wilson_interval(50, 50).high == 1.0


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="outside"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="at least one"):
        wilson_interval(0, 0)


def test_mcnemar_exact_p_is_twice_the_binomial_tail() -> None:
    # 10 vs 2 discordant pairs: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096.
    assert mcnemar_exact_p(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact_p(0, 0) == 1.0


def _scores(n: int, base_only: int, variant_only: int) -> tuple[np.ndarray, np.ndarray]:
    base = np.ones(n, dtype=bool)
    variant = np.ones(n, dtype=bool)
    base[:variant_only] = False  # the variant alone gets these right
    variant[variant_only : variant_only + base_only] = False
    return base, variant


def test_paired_difference_counts_discordant_pairs_and_brackets_the_loss() -> None:
    base, variant = _scores(1000, base_only=5, variant_only=0)
    paired = paired_difference(base, variant, resamples=4000, seed=1)
    assert (paired.a_only, paired.b_only, paired.n) == (5, 0, 1000)
    assert paired.difference.estimate == pytest.approx(0.005)
    # 5 events in 1000: the bootstrap bounds are about 0.001 and 0.0095 (Poisson 2.5% and 97.5% of mean 5).
    assert 0.0 < paired.difference.low <= 0.002
    assert 0.008 <= paired.difference.high <= 0.011


def test_equal_accuracy_with_disagreements_gives_an_interval_around_zero() -> None:
    base, variant = _scores(2000, base_only=40, variant_only=40)
    paired = paired_difference(base, variant, seed=3)
    assert paired.difference.estimate == 0.0
    assert paired.difference.low < 0 < paired.difference.high
    assert paired.mcnemar_p == pytest.approx(1.0)


def test_non_inferiority_decides_on_the_upper_bound_not_the_point() -> None:
    budget = 0.01
    small_loss = paired_difference(*_scores(20000, base_only=60, variant_only=0), seed=0).difference
    assert small_loss.estimate == pytest.approx(0.003) and non_inferior(small_loss, budget)
    large_loss = paired_difference(*_scores(1000, base_only=30, variant_only=0), seed=0).difference
    assert not non_inferior(large_loss, budget)
    # Point estimate inside the budget, but too few examples to show it: not non-inferior.
    uncertain = paired_difference(*_scores(200, base_only=3, variant_only=2), seed=0).difference
    assert uncertain.estimate == pytest.approx(0.005) and uncertain.high > budget
    assert not non_inferior(uncertain, budget)
    assert non_inferior(Interval(estimate=0.0, low=-0.01, high=0.01, confidence=0.95), budget)


def test_paired_difference_is_deterministic_for_a_seed() -> None:
    base, variant = _scores(500, base_only=7, variant_only=3)
    assert paired_difference(base, variant, seed=9) == paired_difference(base, variant, seed=9)


def test_paired_difference_rejects_unpaired_inputs() -> None:
    with pytest.raises(ValueError, match="one length"):
        paired_difference([True, False], [True])


def test_macro_f1_of_a_hand_checked_confusion() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 1, 0])
    # class 0: tp 2, fp 1, fn 1 -> 4/6; class 1: tp 2, fp 1, fn 0 -> 4/5; class 2: tp 0 -> 0.
    assert macro_f1(predictions, labels, 3) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert macro_f1(labels, labels, 3) == 1.0


def test_macro_f1_interval_contains_the_estimate_and_narrows_with_data() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=4000)
    predictions = np.where(rng.random(4000) < 0.8, labels, rng.integers(0, 5, size=4000))
    wide = macro_f1_interval(predictions[:400], labels[:400], 5, resamples=500, seed=1)
    narrow = macro_f1_interval(predictions, labels, 5, resamples=500, seed=1)
    assert wide.low < wide.estimate < wide.high and narrow.low < narrow.estimate < narrow.high
    assert narrow.half_width < wide.half_width
