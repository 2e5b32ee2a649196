"""A threshold with a guarantee: the false-positive rate on fresh benign prompts stays at or under the
target with a stated confidence, from the order statistics of n benign scores.

Why not the empirical quantile: the 1% quantile of 200 scores is itself a random draw, and half the
time it lets more than 1% of fresh benign images through (measured on the testbed: 2.4%). For n
i.i.d. benign scores and the threshold t = the j-th largest of them (an image is memorized when its
score is strictly above t), the rate a fresh benign image exceeds t is the j-th smallest of n uniform
variables, Beta(j, n - j + 1), whatever the score's distribution. So

    P(rate <= target) = P(Binomial(n, target) >= j),

and the threshold is the lowest one (the largest j) for which that probability reaches the
confidence. With j = 1 (the maximum score) it is 1 - (1 - target)^n, hence the fewest scores a target
needs: n >= log(1 - confidence) / log(1 - target) (299 for 1% at 95%).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MemguardValueError

DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # an image scoring strictly above it is memorized
    rank: int  # the threshold is the rank-th largest benign score (1: the maximum)
    num_scores: int
    target_fpr: float
    confidence: float  # P(false-positive rate on fresh benign images <= target_fpr), at least this
    expected_fpr: float  # the rate's mean, rank / (n + 1)
    empirical_fpr: float  # the share of the calibration scores above the threshold


def _check_rates(target_fpr: float, confidence: float) -> None:
    if isinstance(target_fpr, bool) or not isinstance(target_fpr, (int, float)) or not 0.0 < target_fpr < 1.0:
        raise MemguardValueError(f"target_fpr must be a number in (0, 1), got {target_fpr!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise MemguardValueError(f"confidence must be a number in (0, 1), got {confidence!r}")


def required_scores(target_fpr: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The fewest benign scores for which any threshold keeps `target_fpr` with `confidence`."""
    _check_rates(target_fpr, confidence)
    return math.ceil(math.log1p(-confidence) / math.log1p(-target_fpr) - 1e-12)


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k), summed in log space (no SciPy needed; exact enough for n in the millions)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def guaranteed_threshold(
    scores: Sequence[float], target_fpr: float, confidence: float = DEFAULT_CONFIDENCE
) -> ThresholdChoice:
    """The lowest threshold among the benign `scores` whose false-positive rate on fresh benign images
    of the same distribution is at most `target_fpr` with probability at least `confidence`.

    Raises ValueError naming the number of scores needed when there are too few, and for non-finite scores.
    """
    _check_rates(target_fpr, confidence)
    n = len(scores)
    needed = required_scores(target_fpr, confidence)
    if n < needed:
        raise MemguardValueError(
            f"target_fpr={target_fpr} at confidence {confidence} needs at least {needed} benign scores, got {n}; "
            "pass more prompts (distinct ones: the images of one prompt are not independent samples)"
        )
    values = sorted((float(s) for s in scores), reverse=True)
    if not all(math.isfinite(v) for v in values):
        raise MemguardValueError("benign scores contain NaN or infinity; is the signal available (guidance > 1)?")
    rank = _rank(n, float(target_fpr), float(confidence))
    threshold = values[rank - 1]
    return ThresholdChoice(
        threshold=threshold,
        rank=rank,
        num_scores=n,
        target_fpr=float(target_fpr),
        confidence=binomial_tail(n, target_fpr, rank),
        expected_fpr=rank / (n + 1),
        empirical_fpr=sum(v > threshold for v in values) / n,
    )


def threshold_spread(
    scores: Sequence[float], rank: int, share: float = 0.9, draws: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Where a threshold chosen as the `rank`-th largest of `scores` (`ThresholdChoice.rank`,
    `Calibration.threshold_rank`) would land had another set of as many benign prompts been drawn
    from the same distribution: the central `share` of that order statistic over `draws` bootstrap
    resamples of `scores` (with replacement, seeded). The guarantee holds whichever threshold a draw
    picks; the spread says how much this one rests on the few prompts in the tail, so a prompt whose
    score lies inside it is caught or not depending on the draw.
    """
    values = np.asarray([float(s) for s in scores], dtype=np.float64)
    if not len(values) or not np.isfinite(values).all():
        raise MemguardValueError("scores must be a non-empty sequence of finite numbers")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(values):
        raise MemguardValueError(f"rank must be an int in 1..{len(values)} (the number of scores), got {rank!r}")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share < 1.0:
        raise MemguardValueError(f"share must be a number in (0, 1), got {share!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise MemguardValueError(f"draws must be a positive int, got {draws!r}")
    n = len(values)
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    # the rank-th largest of each resample is its (n - rank)-th smallest
    thresholds = np.partition(values[picks], n - rank, axis=1)[:, n - rank]
    tail = (1.0 - share) / 2
    low, high = np.quantile(thresholds, [tail, 1.0 - tail])
    return float(low), float(high)


@functools.lru_cache(maxsize=256)
def _rank(n: int, target_fpr: float, confidence: float) -> int:
    """The largest rank whose tail probability still reaches the confidence (it falls as rank grows);
    it depends on n, the target and the confidence only, not on the scores."""
    rank, low, high = 1, 1, n
    while low <= high:
        middle = (low + high) // 2
        if binomial_tail(n, target_fpr, middle) >= confidence:
            rank, low = middle, middle + 1
        else:
            high = middle - 1
    return rank


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a rate `hits / n` (95% by default)."""
    if n <= 0:
        raise MemguardValueError("wilson_interval needs n >= 1")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
