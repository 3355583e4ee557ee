"""infopt.stats' per-document (language-model) estimators against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infopt.stats import (
    Interval,
    StatsError,
    accuracy_interval,
    accuracy_loss_interval,
    non_inferior,
    perplexity_increase_interval,
    perplexity_interval,
)


def test_identical_documents_give_a_point_interval_at_exp_of_the_mean_nll() -> None:
    # 20 documents, each 10 tokens with 2 nats per token: every resample has mean NLL 2, perplexity e^2.
    result = perplexity_interval([20.0] * 20, [10] * 20, resamples=200)
    assert result.estimate == pytest.approx(math.e**2)
    assert result.low == pytest.approx(math.e**2) and result.high == pytest.approx(math.e**2)


def test_two_document_accuracy_interval_spans_the_three_possible_resamples() -> None:
    # Doc A: 10/10 correct, doc B: 0/10. Resamples of two documents give 1.0 (AA), 0.5 (AB, BA) or 0.0 (BB)
    # with probabilities 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % quantiles are 0 and 1.
    result = accuracy_interval([10, 0], [10, 10], resamples=4000, seed=1)
    assert result.estimate == 0.5
    assert (result.low, result.high) == (0.0, 1.0)


def test_paired_perplexity_increase_has_no_between_document_noise() -> None:
    # Documents differ wildly, but the variant is worse by exactly 0.1 nats on every token of every one:
    # the paired increase is e^0.1 - 1 = 0.10517... with a zero-width interval.
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 60, size=300).astype(float)
    baseline = tokens * rng.uniform(1.0, 6.0, size=300)
    variant = baseline + 0.1 * tokens
    result = perplexity_increase_interval(variant, baseline, tokens, resamples=500)
    assert result.estimate == pytest.approx(math.expm1(0.1))
    assert result.high - result.low == pytest.approx(0.0, abs=1e-12)
    assert non_inferior(result, 0.11) is True
    assert non_inferior(result, 0.10) is False  # 0.10517 > 0.10


def test_accuracy_loss_matches_the_normal_approximation_on_a_large_sample() -> None:
    # 8000 one-token documents; the variant flips 400 of the baseline's hits to misses and nothing else:
    # the loss is 0.05 and each document's difference is 1 (p = 0.05) or 0, so the 95 % half-width is
    # 1.96 * sqrt(0.05 * 0.95 / 8000) = 0.00478.
    baseline = np.ones(8000)
    variant = baseline.copy()
    variant[:400] = 0
    result = accuracy_loss_interval(variant, baseline, np.ones(8000), resamples=4000, seed=3)
    assert result.estimate == pytest.approx(0.05)
    half_width = (result.high - result.low) / 2
    assert half_width == pytest.approx(1.96 * math.sqrt(0.05 * 0.95 / 8000), rel=0.12)
    assert non_inferior(result, 0.04) is False
    assert non_inferior(result, 0.06) is True


def test_same_seed_same_interval_and_a_different_seed_moves_it() -> None:
    rng = np.random.default_rng(5)
    correct, tokens = rng.integers(0, 10, size=50), np.full(50, 10)
    first = accuracy_interval(correct, tokens, seed=7)
    assert accuracy_interval(correct, tokens, seed=7) == first
    assert accuracy_interval(correct, tokens, seed=8) != first


def test_non_inferior_uses_the_upper_bound_not_the_estimate() -> None:
    assert non_inferior(Interval(estimate=0.0, low=-0.01, high=0.03, confidence=0.95), 0.02) is False
    assert non_inferior(Interval(estimate=0.019, low=0.018, high=0.02, confidence=0.95), 0.02) is True


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(StatsError, match="different lengths"):
        accuracy_interval([1, 2], [3])
    with pytest.raises(StatsError, match="no documents"):
        accuracy_interval([], [])
    with pytest.raises(StatsError, match="no scored tokens"):
        accuracy_interval([0, 0], [0, 0])
    with pytest.raises(StatsError, match="NaN"):
        perplexity_interval([float("nan")], [3])
