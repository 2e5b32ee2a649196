import json
import math

import pytest

import memguard
from memguard import Calibration, GuardConfig, Policy
from memguard.calibration import threshold_for_fpr


def _calibration(**changes) -> Calibration:
    fields = dict(
        model_fingerprint="abc",
        threshold=0.3,
        target_fpr=0.01,
        decision_step=2,
        detector="noise_rms",
        num_scores=100,
        achieved_fpr=0.01,
        num_inference_steps=50,
        guidance_scale=7.5,
        scheduler="DDIMScheduler",
    )
    fields.update(changes)
    return Calibration(**fields)


def test_unknown_field_is_a_type_error():
    with pytest.raises(TypeError, match="threshhold"):
        GuardConfig(threshhold=0.5)


def test_positional_arguments_are_refused():
    with pytest.raises(TypeError):
        GuardConfig(True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(policy="block"), TypeError, "policy"),
        (dict(attribution="vibes"), ValueError, "attribution"),
        (dict(residual_draws=0), ValueError, "residual_draws"),
        (dict(registry=42), TypeError, "registry"),
        (dict(mitigation="reseed"), TypeError, "mitigation"),
        (dict(decision_step=0), ValueError, "decision_step"),
        (dict(decision_step=1.5), TypeError, "decision_step"),
        (dict(decision_step=True), TypeError, "decision_step"),
        (dict(threshold=math.nan), ValueError, "threshold"),
        (dict(threshold=math.inf), ValueError, "threshold"),
        (dict(threshold="0.3"), TypeError, "threshold"),
        (dict(enabled="yes"), TypeError, "enabled"),
        (dict(attention_layers=()), ValueError, "attention_layers"),
        (dict(attention_layers="mid_block"), TypeError, "attention_layers"),
        (dict(calibration=42), TypeError, "calibration"),
    ],
)
def test_bad_values_name_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        GuardConfig(**kwargs)


def test_config_is_immutable_and_replace_validates():
    config = GuardConfig()
    with pytest.raises(AttributeError):
        config.policy = Policy.uniform("block")
    assert config.replace(policy=Policy.uniform("block")).policy.unintended == "block"
    with pytest.raises(ValueError, match="unintended"):
        config.replace(policy=Policy(unintended="nope"))


def test_decision_step_defaults_to_calibration_then_one():
    assert GuardConfig().effective_decision_step == 1
    assert GuardConfig(calibration=_calibration(decision_step=3)).effective_decision_step == 3
    with pytest.raises(ValueError, match="decision_step"):
        GuardConfig(calibration=_calibration(decision_step=3), decision_step=1)


def test_calibration_round_trips_through_json(tmp_path):
    path = tmp_path / "calib.json"
    _calibration().save(path)
    assert json.loads(path.read_text())["threshold"] == 0.3
    assert Calibration.load(path) == _calibration()
    assert GuardConfig(calibration=str(path)).calibration == _calibration()


def test_unreadable_or_malformed_calibration_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read calibration file"):
        GuardConfig(calibration=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Calibration.load(bad)
    data = _calibration().to_dict()
    data["threshold"] = None
    bad.write_text(json.dumps({k: v for k, v in data.items() if k != "threshold"}))
    with pytest.raises(ValueError, match="missing field.*threshold"):
        Calibration.load(bad)
    bad.write_text(json.dumps({**_calibration().to_dict(), "extra": 1}))
    with pytest.raises(ValueError, match="unknown field.*extra"):
        Calibration.load(bad)
    bad.write_text(json.dumps({**_calibration().to_dict(), "format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        Calibration.load(bad)
    bad.write_text(json.dumps({**_calibration().to_dict(), "threshold": float("nan")}))
    with pytest.raises(ValueError, match="threshold"):
        Calibration.load(bad)
    # the guarantee is one statement: a file with part of it, or a rank past its scores, is refused
    bad.write_text(json.dumps({**_calibration().to_dict(), "confidence": 0.97}))
    with pytest.raises(ValueError, match="expected_fpr is missing while confidence is given"):
        Calibration.load(bad)
    bad.write_text(
        json.dumps({**_calibration().to_dict(), "confidence": 0.97, "threshold_rank": 999, "expected_fpr": 0.01})
    )
    with pytest.raises(ValueError, match="threshold_rank is 999, more than num_scores \\(100\\)"):
        Calibration.load(bad)


def test_a_detector_of_ones_own_that_cannot_read_a_state_is_a_calibration_error(tmp_path):
    from dataclasses import dataclass

    from memguard.detection import DETECTORS, register_detector
    from memguard.detection.top_layers import TopLayerEntropyDetector

    @dataclass(frozen=True)
    class Picky(TopLayerEntropyDetector):
        name: str = "picky_for_a_test"

        def with_state(self, state):
            return super().with_state({"layer_stats": state["mean"]})  # a KeyError on any other state

    register_detector("picky_for_a_test", Picky)
    try:
        path = tmp_path / "calibration.json"
        path.write_text(json.dumps({**_calibration(detector="picky_for_a_test").to_dict(), "detector_state": {}}))
        with pytest.raises(ValueError, match="detector_state does not fit detector 'picky_for_a_test'"):
            Calibration.load(path)
    finally:
        DETECTORS.pop("picky_for_a_test")


def test_threshold_for_fpr_keeps_at_most_the_target_share_above():
    scores = [float(i) for i in range(100)]  # 0..99
    threshold, achieved = threshold_for_fpr(scores, 0.05)
    assert threshold == 94.0  # 95..99 are above: 5 of 100
    assert achieved == pytest.approx(0.05)
    threshold, achieved = threshold_for_fpr(scores, 0.01)
    assert threshold == 98.0 and achieved == pytest.approx(0.01)
    with pytest.raises(ValueError, match="at least 100"):
        threshold_for_fpr(scores[:50], 0.01)
    with pytest.raises(ValueError, match="NaN"):
        threshold_for_fpr(scores + [math.nan], 0.05)
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_for_fpr(scores, 0.0)


def test_a_float32_calibration_identifies_the_same_weights_in_half_precision(shared_base_pipe):
    import torch

    from memguard.testbed.tiny import tiny_pipeline

    fingerprint = memguard.model_fingerprint(shared_base_pipe)
    for dtype in (torch.float16, torch.bfloat16):
        half = tiny_pipeline(seed=0).to(dtype=dtype)
        assert memguard.model_fingerprint(half) == fingerprint  # signs survive the cast
    other = tiny_pipeline(seed=1)
    assert memguard.model_fingerprint(other) != fingerprint
    tuned = tiny_pipeline(seed=0)
    with torch.no_grad():  # a fine-tune moves every weight a little: some signs flip
        for parameter in tuned.unet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    assert memguard.model_fingerprint(tuned) != fingerprint
