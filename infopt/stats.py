"""Statistics behind every accuracy claim: intervals, paired comparisons and the non-inferiority decision.

- `wilson_interval`: the Wilson score interval of a proportion (accuracy of one model on n examples).
- `paired_difference`: two models scored on the SAME examples. The difference of their accuracies is the
  mean of d_i = a_i - b_i in {-1, 0, 1}; its interval is a percentile bootstrap over examples. Because d
  takes three values, resampling n examples is a multinomial draw of the three counts, which is exact and
  cheap (no n x resamples index matrix). Beside it, the exact McNemar test on the discordant pairs.
- `macro_f1_interval`: a Poisson-weighted bootstrap of macro-F1 over examples.
- `non_inferior`: the deployment gate. A variant is within budget only when the UPPER bound of its paired
  loss against the baseline is at most the budget; a point estimate never decides.

Per-document ratio estimators, for language models (perplexity, next-token accuracy): tokens of one
document are not independent, so those intervals come from a bootstrap over documents (a cluster
bootstrap): resample documents with replacement, recompute the ratio estimator, take percentiles. Paired
comparisons resample the SAME documents for the variant and the baseline:
    perplexity increase = exp(mean NLL_variant - mean NLL_baseline) - 1  (relative; 0.05 = 5 % higher)
    accuracy loss       = accuracy_baseline - accuracy_variant            (fraction; 0.01 = one point)

Every random draw is seeded, so the same predictions always give the same intervals and decisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

Z_CACHE: dict[float, float] = {}
Numbers = Sequence[float] | np.ndarray


class StatsError(ValueError):
    """The inputs cannot give an interval (empty, mismatched lengths, no tokens); the message says which."""


class Interval(BaseModel):
    """A point estimate with its two-sided confidence interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimate: float
    low: float
    high: float
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


class PairedDifference(BaseModel):
    """mean(a) - mean(b) over the same examples, with its bootstrap interval and McNemar's exact test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    difference: Interval
    n: int
    a_only: int  # examples a gets right and b gets wrong
    b_only: int  # examples b gets right and a gets wrong
    mcnemar_p: float  # exact two-sided binomial test on the discordant pairs


def z_value(confidence: float) -> float:
    """The standard normal quantile for a two-sided `confidence` interval."""
    if confidence not in Z_CACHE:
        from scipy.stats import norm

        Z_CACHE[confidence] = float(norm.ppf(0.5 + confidence / 2))
    return Z_CACHE[confidence]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of successes / n (well-behaved near 0 and 1, unlike the Wald interval)."""
    if n <= 0:
        raise ValueError(f"n is {n}; an interval needs at least one example")
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} is outside [0, {n}]")
    z = z_value(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(estimate=p, low=max(0.0, centre - margin), high=min(1.0, centre + margin), confidence=confidence)


def unpaired_difference(successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95) -> Interval:
    """Newcombe's hybrid score interval of p_a - p_b from two Wilson intervals.

    For when only counts survive (no per-example predictions to pair). On the same test examples it is
    conservative: correlated errors make the paired interval narrower, never wider."""
    a = wilson_interval(successes_a, n_a, confidence)
    b = wilson_interval(successes_b, n_b, confidence)
    estimate = a.estimate - b.estimate
    low = estimate - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = estimate + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(estimate=estimate, low=low, high=high, confidence=confidence)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under H0 the discordant pairs split 50/50."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(a_only, b_only), discordant, 0.5).pvalue)


def paired_difference(
    correct_a: Sequence[bool] | np.ndarray,
    correct_b: Sequence[bool] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedDifference:
    """Accuracy of a minus accuracy of b on the same examples, with a percentile bootstrap interval."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        raise ValueError("paired scores need at least one example")
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    estimate = (a_only - b_only) / n
    # d_i = +1 (a only), -1 (b only), 0 (both or neither): a bootstrap resample of n examples is a
    # multinomial draw of these three counts.
    probabilities = [a_only / n, b_only / n, 1 - (a_only + b_only) / n]
    counts = np.random.default_rng(seed).multinomial(n, probabilities, size=resamples)
    means = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(
        difference=Interval(estimate=estimate, low=float(low), high=float(high), confidence=confidence),
        n=n,
        a_only=a_only,
        b_only=b_only,
        mcnemar_p=mcnemar_exact_p(a_only, b_only),
    )


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int, weights: np.ndarray | None = None) -> float:
    """Unweighted mean of per-class F1 over all `num_labels` classes (a class never predicted nor present is 0)."""
    codes = np.asarray(labels, dtype=np.int64) * num_labels + np.asarray(predictions, dtype=np.int64)
    confusion = np.bincount(codes, weights=weights, minlength=num_labels * num_labels).reshape(num_labels, num_labels)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)
    return float(f1.mean())


def macro_f1_interval(
    predictions: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Macro-F1 with a Poisson(1)-weighted bootstrap interval over examples (chunked to bound memory)."""
    rng = np.random.default_rng(seed)
    estimate = macro_f1(predictions, labels, num_labels)
    values: list[float] = []
    chunk = 100
    for start in range(0, resamples, chunk):
        weights = rng.poisson(1.0, size=(min(chunk, resamples - start), len(labels)))
        values.extend(macro_f1(predictions, labels, num_labels, row) for row in weights)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(estimate=estimate, low=float(low), high=float(high), confidence=confidence)


def non_inferior(loss: Interval, budget: float) -> bool:
    """The gate: the upper bound of the loss (baseline accuracy - variant accuracy) is within the budget."""
    return loss.high <= budget + 1e-12


# ----------------------------------------------------------------------------- per-document ratio estimators
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
    return Interval(estimate=float(num.sum() / den.sum()), low=low, high=high, confidence=confidence)


def perplexity_interval(
    nll_sums: Numbers, tokens: Numbers, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """exp(mean NLL per token) with its interval (exp of the mean-NLL interval)."""
    mean = ratio_interval(nll_sums, tokens, resamples=resamples, confidence=confidence, seed=seed)
    return Interval(
        estimate=math.exp(mean.estimate), low=math.exp(mean.low), high=math.exp(mean.high), confidence=confidence
    )


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
    return Interval(estimate=float((var.sum() - base.sum()) / den.sum()), low=low, high=high, confidence=confidence)


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
    return Interval(
        estimate=math.expm1(diff.estimate), low=math.expm1(diff.low), high=math.expm1(diff.high), confidence=confidence
    )


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
