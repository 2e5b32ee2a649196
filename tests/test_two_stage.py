"""memguard's two-stage score ("attention_or_updates"): the top layers' attention at step 1 or the
latent-update size to the decision step, each on its benign tail's scale. It is the larger of the two
calibrated parts, decides at step 8 unless told, survives its calibration file, refuses a broken one,
and its intent check scores the rest of the prompt on the same steps."""

import json
import math

import pytest
import torch
from helpers import BENIGN_SCENES as BENIGN
from helpers import seeded

import memguard
from memguard import Calibration, GuardConfig, IntendedConcept, IntentRegistry, Policy
from memguard.detection import AttentionOrUpdatesDetector, get_detector
from memguard.detection.two_stage import UPDATES, tail_scale

STEPS = 10
NAME = "attention_or_updates"


@pytest.fixture(scope="module")
def calibration(shared_base_pipe):
    return memguard.calibrate(
        shared_base_pipe, BENIGN, target_fpr=0.2, num_inference_steps=STEPS, detector=NAME, progress=False
    )


def _scores(pipe, config, prompts=BENIGN):
    return [r.score for r in memguard.guard(pipe, config).score(prompts, num_inference_steps=STEPS, progress=False)]


def test_it_decides_at_step_8_unless_told(calibration):
    assert calibration.decision_step == 8  # memguard.calibrate takes the detector's own step
    fitted = get_detector(NAME).with_state(calibration.detector_state)
    assert GuardConfig(detector=fitted, threshold=1.0).effective_decision_step == 8
    assert GuardConfig(detector=fitted, threshold=1.0, decision_step=5).effective_decision_step == 5
    assert GuardConfig(detector="noise_rms", threshold=1.0).effective_decision_step == 1


def test_a_call_too_short_for_its_step_is_refused_naming_where_the_step_came_from(shared_base_pipe, calibration):
    fitted = get_detector(NAME).with_state(calibration.detector_state)
    guarded = memguard.guard(shared_base_pipe, GuardConfig(detector=fitted, threshold=1.0))
    with pytest.raises(ValueError, match="decision_step=8 is beyond num_inference_steps=6.*the detector's own"):
        guarded("a red circle", num_inference_steps=6, generator=seeded(1), output_type="latent")


def test_the_score_is_the_larger_of_the_two_calibrated_parts(shared_base_pipe, calibration):
    state = calibration.detector_state
    assert set(state) == {"attention", "attention_tail", "updates_tail", "attention_steps"}
    # each part from the detector that reads it alone: attention at step 1, updates averaged to step 8
    top = get_detector("top_layer_entropy").with_state(state["attention"])
    attention = _scores(shared_base_pipe, GuardConfig(detector=top, threshold=1e9, decision_step=1))
    updates = _scores(shared_base_pipe, GuardConfig(detector="broken_memories", threshold=1e9, decision_step=8))
    (a_median, a_width), (u_median, u_width) = state["attention_tail"], state["updates_tail"]
    expected = [
        max((a - a_median) / a_width, (math.log(u) - u_median) / u_width)
        for a, u in zip(attention, updates, strict=True)
    ]
    scores = _scores(shared_base_pipe, GuardConfig(calibration=calibration))
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the fit's own prompts: the threshold keeps to its rank, and both parts decide some images
    assert sum(s > calibration.threshold for s in scores) == calibration.threshold_rank - 1
    from_attention = [e == pytest.approx((a - a_median) / a_width) for e, a in zip(expected, attention, strict=True)]
    assert any(from_attention) and not all(from_attention)


def test_each_part_alone_raises_the_score():
    detector = AttentionOrUpdatesDetector()
    layers = {f"layer{i}": torch.linspace(0.2, 0.8, 200) + 0.01 * i for i in range(8)}
    updates = torch.linspace(-3.0, -1.0, 200).double()
    fitted = detector.fit({**layers, UPDATES: updates})
    typical = {k: v[100:101] for k, v in layers.items()} | {UPDATES: updates[100:101]}
    base = float(fitted.score_features(typical))
    loud_attention = {**typical, **{k: torch.tensor([2.0]) for k in layers}}
    loud_updates = {**typical, UPDATES: torch.tensor([0.0], dtype=torch.float64)}
    assert float(fitted.score_features(loud_attention)) > base + 1
    assert float(fitted.score_features(loud_updates)) > base + 1
    # on its benign tail's scale: the 99th percentile of each part maps to 1
    median, width = tail_scale(updates, "updates")
    assert (float(torch.quantile(updates, 0.99)) - median) / width == pytest.approx(1.0)


def test_the_calibration_file_round_trips_and_a_broken_one_is_refused(shared_base_pipe, calibration, tmp_path):
    path = tmp_path / "calibration.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration
    config = GuardConfig(calibration=path)
    assert config.effective_detector.fitted and config.effective_decision_step == 8
    state = calibration.detector_state
    for broken, message in (
        ({**state, "updates_tail": [0.0, -1.0]}, "updates_tail"),
        ({**state, "attention_steps": 0}, "attention_steps"),
        ({k: v for k, v in state.items() if k != "attention"}, "layer_stats"),
    ):
        (tmp_path / "broken.json").write_text(json.dumps({**calibration.to_dict(), "detector_state": broken}))
        with pytest.raises(ValueError, match=message):
            _ = GuardConfig(calibration=tmp_path / "broken.json").effective_detector
    with pytest.raises(ValueError, match="needs per-layer statistics"):
        GuardConfig(detector=NAME, threshold=1.0)  # nothing to scale by: refused at once
    with pytest.raises(ValueError, match="decision_step"):
        AttentionOrUpdatesDetector(decision_step=0)


def test_its_intent_check_scores_the_rest_of_the_prompt_on_the_same_steps(shared_base_pipe, calibration):
    registry = IntentRegistry((IntendedConcept("Velmora crest", ("the Velmora emblem",)),))
    config = GuardConfig(
        calibration=calibration, threshold=-1e6, registry=registry, policy=Policy.uniform("flag"), residual_draws=2
    )
    (report,) = memguard.guard(shared_base_pipe, config)(
        "a portrait of the Velmora crest on the Kettle Hill Gazette cover",
        num_inference_steps=STEPS,
        generator=seeded(1),
        output_type="latent",
    ).memorization
    assert report.decided_at_step == 8 and report.memorized
    assert math.isfinite(report.residual_score) and report.intent == "mixed"  # every score passes -1e6
