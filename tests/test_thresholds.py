"""The calibrated threshold's guarantee: on fresh benign draws, the false-positive rate exceeds the
target no more often than 1 - confidence, whatever the score distribution."""

import math

import numpy as np
import pytest

from memguard.thresholds import binomial_tail, guaranteed_threshold, required_scores, wilson_interval


def test_the_fewest_scores_a_target_needs():
    assert required_scores(0.01, 0.95) == 299  # 1 - 0.99**299 >= 0.95 > 1 - 0.99**298
    assert 1 - 0.99**299 >= 0.95 > 1 - 0.99**298
    assert required_scores(0.05, 0.9) == 45


def test_too_few_scores_are_refused_with_the_number_needed():
    with pytest.raises(ValueError, match=r"needs at least 299 benign scores, got 200"):
        guaranteed_threshold(list(np.linspace(0, 1, 200)), 0.01)
    with pytest.raises(ValueError, match="target_fpr"):
        guaranteed_threshold([0.5] * 400, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        guaranteed_threshold([math.nan] + [0.1] * 400, 0.01)


def test_binomial_tail_matches_a_direct_sum():
    n, p = 40, 0.1
    direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(5, n + 1))
    assert binomial_tail(n, p, 5) == pytest.approx(direct, rel=1e-9)
    assert binomial_tail(n, p, 0) == 1.0 and binomial_tail(n, p, n + 1) == 0.0


@pytest.mark.parametrize("distribution", ["uniform", "heavy_tail"])
def test_the_realized_rate_exceeds_the_target_at_most_as_often_as_the_confidence_allows(distribution):
    rng = np.random.default_rng(0)
    n, target, confidence, trials = 800, 0.01, 0.95, 2000
    exceed_guaranteed = exceed_quantile = 0
    for _ in range(trials):
        u = rng.random(n)
        # any continuous score: its true exceedance rate at t is P(score > t), computed exactly
        scores = u if distribution == "uniform" else 1 / (1 - u) ** 2  # a Pareto-like tail
        choice = guaranteed_threshold(list(scores), target, confidence)
        quantile = np.sort(scores)[::-1][int(target * n)]  # the empirical quantile it replaces
        rate = lambda t: 1 - t if distribution == "uniform" else 1 / math.sqrt(t)  # noqa: E731
        exceed_guaranteed += rate(choice.threshold) > target
        exceed_quantile += rate(quantile) > target
    assert exceed_guaranteed / trials <= 1 - confidence + 0.015  # 0.05 plus sampling slack
    assert exceed_quantile / trials > 0.3  # the empirical quantile exceeds the target far more often
    assert choice.rank >= 2 and choice.expected_fpr < target and choice.confidence >= confidence


def test_wilson_interval():
    low, high = wilson_interval(19, 800)
    assert low == pytest.approx(0.0152, abs=5e-4) and high == pytest.approx(0.0369, abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0
