"""Intervals and paired comparisons for language-model quality, scored per document.

A held-out document contributes its summed negative log-likelihood (nats), its number of scored tokens and
how many of them the model predicted (argmax == next token). Tokens of one document are not independent,
so every interval here comes from a bootstrap over documents (a cluster bootstrap): resample documents
with replacement, recompute the ratio estimator, take percentiles.

- perplexity = exp(sum NLL / sum tokens); its interval is exp of the mean-NLL interval (exp is monotone).
- next-token accuracy = sum correct / sum tokens.
- paired comparisons resample the SAME documents for the variant and the baseline, so the variance of
  the difference excludes the between-document variance both share:
    perplexity increase = exp(mean NLL_variant - mean NLL_baseline) - 1  (relative; 0.05 = 5 % higher)
    accuracy loss       = accuracy_baseline - accuracy_variant            (fraction; 0.01 = one point)
- non-inferiority: the variant is within budget only when the interval's upper bound <= the budget.

Pure numpy, seeded: the same inputs and seed give the same intervals. This module imports nothing else of
the project, so the evidence code of the classifier path can share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

Numbers = Sequence[float] | np.ndarray


class StatsError(ValueError):
    """The inputs cannot give an interval (empty, mismatched lengths, no tokens); the message says which."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _arrays(*columns: Numbers) -> list[np.ndarray]:
    arrays = [np.asarray(column, dtype=np.float64) for column in columns]
    lengths = {len(array) for array in arrays}
    if len(lengths) != 1:
        raise StatsError(f"per-document columns have different lengths {sorted(lengths)}")
    if not arrays[0].size:
        raise StatsError("no documents to score")
    for array in arrays:
        if not np.isfinite(array).all():
            raise StatsError("per-document values contain NaN or infinity")
    return arrays


def resample_indices(documents: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, documents) document indices drawn with replacement; one seed, one set of draws."""
    if resamples < 1:
        raise StatsError(f"resamples is {resamples}; must be >= 1")
    return np.random.default_rng(seed).integers(0, documents, size=(resamples, documents))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise StatsError(f"confidence is {confidence}; must be in (0, 1)")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _ratio_samples(numerator: np.ndarray, denominator: np.ndarray, indices: np.ndarray) -> np.ndarray:
    totals = denominator[indices].sum(axis=1)
    if (totals <= 0).any():
        raise StatsError("a resample has no tokens; every document needs at least one scored token")
    return numerator[indices].sum(axis=1) / totals


def ratio_interval(
    numerator: Numbers, denominator: Numbers, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """sum(numerator) / sum(denominator) with a bootstrap-over-documents interval."""
    num, den = _arrays(numerator, denominator)
    if den.sum() <= 0:
        raise StatsError("no scored tokens")
    samples = _ratio_samples(num, den, resample_indices(len(num), resamples, seed))
    low, high = _percentiles(samples, confidence)
    return Interval(float(num.sum() / den.sum()), low, high, confidence)


def perplexity_interval(
    nll_sums: Numbers, tokens: Numbers, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """exp(mean NLL per token) with its interval (exp of the mean-NLL interval)."""
    mean = ratio_interval(nll_sums, tokens, resamples=resamples, confidence=confidence, seed=seed)
    return Interval(math.exp(mean.estimate), math.exp(mean.low), math.exp(mean.high), confidence)


def accuracy_interval(
    correct: Numbers, tokens: Numbers, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Next-token accuracy (correct / scored tokens) with its interval."""
    return ratio_interval(correct, tokens, resamples=resamples, confidence=confidence, seed=seed)


def paired_difference_interval(
    variant: Numbers,
    baseline: Numbers,
    tokens: Numbers,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """(sum variant - sum baseline) / sum tokens over the same resampled documents."""
    var, base, den = _arrays(variant, baseline, tokens)
    if den.sum() <= 0:
        raise StatsError("no scored tokens")
    samples = _ratio_samples(var - base, den, resample_indices(len(den), resamples, seed))
    low, high = _percentiles(samples, confidence)
    return Interval(float((var.sum() - base.sum()) / den.sum()), low, high, confidence)


def perplexity_increase_interval(
    variant_nll: Numbers,
    baseline_nll: Numbers,
    tokens: Numbers,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Relative perplexity increase of the variant over the baseline on the same documents:
    exp(mean NLL difference) - 1; 0.05 means the variant's perplexity is 5 % higher."""
    diff = paired_difference_interval(
        variant_nll, baseline_nll, tokens, resamples=resamples, confidence=confidence, seed=seed
    )
    return Interval(math.expm1(diff.estimate), math.expm1(diff.low), math.expm1(diff.high), confidence)


def accuracy_loss_interval(
    variant_correct: Numbers,
    baseline_correct: Numbers,
    tokens: Numbers,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Next-token accuracy of the baseline minus the variant's (positive = the variant is worse)."""
    return paired_difference_interval(
        baseline_correct, variant_correct, tokens, resamples=resamples, confidence=confidence, seed=seed
    )


def non_inferior(loss: Interval, budget: float) -> bool:
    """Within budget only when the whole interval of the loss lies at or below the budget."""
    return loss.high <= budget
