"""The calibrated threshold's guarantee: on fresh benign draws, the false-positive rate exceeds the
target no more often than 1 - confidence, whatever the score distribution."""

import math

import numpy as np
import pytest

from memguard.calibration import Calibration
from memguard.calibration_summary import summary_lines
from memguard.errors import MemguardValueError
from memguard.thresholds import (
    binomial_tail,
    guaranteed_threshold,
    required_scores,
    threshold_spread,
    wilson_interval,
)


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


def _width(spread: tuple[float, float]) -> float:
    return spread[1] - spread[0]


def test_the_threshold_spread_lies_among_the_scores_and_holds_the_chosen_threshold():
    rng = np.random.default_rng(7)
    for n in (300, 1000, 3000):
        scores = rng.normal(size=n)
        choice = guaranteed_threshold(scores, 0.01)
        low, high = threshold_spread(scores, choice.rank)
        assert scores.min() <= low < high <= scores.max()
        assert low <= choice.threshold <= high  # the threshold picked is a typical draw


def test_more_prompts_narrow_the_threshold_spread():
    rng = np.random.default_rng(11)
    widths = []
    for n in (400, 4000):
        scores = rng.standard_t(df=4, size=n)  # a heavy upper tail, as attention scores have
        widths.append(_width(threshold_spread(scores, guaranteed_threshold(scores, 0.01).rank)))
    assert widths[1] < 0.6 * widths[0]


def test_the_threshold_spread_is_seeded_and_a_flat_tail_has_none():
    scores = np.random.default_rng(3).normal(size=500)
    assert threshold_spread(scores, 5, seed=1) == threshold_spread(scores, 5, seed=1)
    assert threshold_spread([0.5] * 400, 3) == (0.5, 0.5)
    # a wider share holds a wider range
    assert _width(threshold_spread(scores, 5, share=0.99)) > _width(threshold_spread(scores, 5, share=0.5))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1.0, 2.0], 0), {}, "rank must be an int in 1..2"),
        (([1.0, 2.0], 3), {}, "rank must be an int in 1..2"),
        (([1.0, 2.0], True), {}, "rank must be an int"),
        (([1.0, float("nan")], 1), {}, "scores must be a non-empty sequence of finite numbers"),
        (([], 1), {}, "scores must be a non-empty"),
        (([1.0, 2.0], 1), {"share": 1.0}, "share must be a number in \\(0, 1\\)"),
        (([1.0, 2.0], 1), {"draws": 0}, "draws must be a positive int"),
    ],
)
def test_threshold_spread_refuses_bad_arguments_by_name(args, kwargs, message):
    with pytest.raises(MemguardValueError, match=message):
        threshold_spread(*args, **kwargs)


def _calibration(scores: list[float], **changes) -> Calibration:
    choice = guaranteed_threshold(scores, 0.01)
    fields = dict(
        model_fingerprint="abc",
        threshold=choice.threshold,
        target_fpr=0.01,
        decision_step=1,
        detector="top_layer_entropy",
        num_scores=len(scores),
        achieved_fpr=choice.empirical_fpr,
        num_inference_steps=50,
        guidance_scale=7.5,
        scheduler="DDIMScheduler",
        confidence=choice.confidence,
        threshold_rank=choice.rank,
        expected_fpr=choice.expected_fpr,
        benign_scores=sorted(scores, reverse=True),
    )
    return Calibration(**{**fields, **changes})


def test_the_calibration_summary_prints_the_spread_only_when_it_can_be_measured():
    scores = [float(v) for v in np.random.default_rng(5).normal(size=400)]
    calibration = _calibration(scores)
    low, high = threshold_spread(scores, calibration.threshold_rank)
    text = "\n".join(summary_lines(calibration))
    assert f"threshold spread: another 400 prompts like these would put it in {low:.6g}-{high:.6g}" in text
    # format 1 (no rank), or only the highest scores stored: nothing to resample
    unranked = _calibration(scores, confidence=None, threshold_rank=None, expected_fpr=None)
    for partial in (unranked, _calibration(scores, num_scores=40_000)):
        assert not any(line.startswith("threshold spread") for line in summary_lines(partial))
