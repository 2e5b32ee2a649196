"""Decisions at step k, flag and block actions, early stopping, scoring and calibration."""

import json

import numpy as np
import pytest
from helpers import BENIGN_SCENES as BENIGN
from helpers import PROMPTS, UNetCallCounter, seeded

import memguard
from memguard import Calibration, GuardConfig, Policy
from memguard.detection import DEFAULT_THRESHOLD

STEPS = 6


def _run(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("generator", seeded(2))
    kwargs.setdefault("output_type", "np")
    return pipe(PROMPTS, **kwargs)


def _scores(pipe):
    return [r.score for r in _run(memguard.guard(pipe)).memorization]


def test_block_replaces_every_image_and_stops_the_loop_at_the_decision_step(shared_base_pipe):
    counter = UNetCallCounter(shared_base_pipe.unet)
    out = _run(
        memguard.guard(shared_base_pipe, GuardConfig(policy=Policy.uniform("block"), threshold=-1.0, decision_step=2))
    )
    counter.remove()
    assert counter.calls == 2  # the remaining steps were skipped
    assert np.all(out.images == 0)
    for report in out.memorization:
        assert report.action == "blocked" and report.memorized and report.decided_at_step == 2
        assert "threshold" in report.reason and report.threshold_source == "config"


def test_block_only_the_memorized_image_of_a_batch(shared_base_pipe):
    low, high = sorted(_scores(shared_base_pipe))
    reference = _run(shared_base_pipe).images
    config = GuardConfig(policy=Policy.uniform("block"), threshold=(low + high) / 2)
    counter = UNetCallCounter(shared_base_pipe.unet)
    out = _run(memguard.guard(shared_base_pipe, config), output_type="pil")
    counter.remove()
    assert counter.calls == STEPS  # one clean image: the loop must finish
    actions = [r.action for r in out.memorization]
    assert sorted(actions) == ["blocked", "none"]
    for image, report, ref in zip(out.images, out.memorization, reference, strict=True):
        pixels = np.asarray(image)
        if report.action == "blocked":
            assert pixels.max() == 0 and image.size == (ref.shape[1], ref.shape[0])
        else:
            assert np.array_equal(pixels, (ref * 255).round().astype("uint8"))


def test_flag_marks_images_above_the_threshold_only(shared_base_pipe):
    low, high = sorted(_scores(shared_base_pipe))
    out = _run(memguard.guard(shared_base_pipe, GuardConfig(policy=Policy.uniform("flag"), threshold=(low + high) / 2)))
    assert sorted(r.action for r in out.memorization) == ["flagged", "none"]
    assert all(r.memorized == (r.score > r.threshold) for r in out.memorization)


def test_uncalibrated_reports_say_so_and_use_the_documented_default(shared_base_pipe):
    out = _run(memguard.guard(shared_base_pipe))
    assert {(r.threshold, r.threshold_source, r.calibrated) for r in out.memorization} == {
        (DEFAULT_THRESHOLD, "default", False)
    }


def test_user_interrupt_before_the_decision_step_still_reports(shared_base_pipe):
    def stop_now(pipe, step, timestep, kwargs):
        pipe._interrupt = True
        return kwargs

    out = _run(memguard.guard(shared_base_pipe, GuardConfig(decision_step=4)), callback_on_step_end=stop_now)
    assert [r.decided_at_step for r in out.memorization] == [1, 1]
    assert all(r.status == "checked" for r in out.memorization)


def test_score_stops_at_the_decision_step_and_matches_full_calls(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(decision_step=2))
    counter = UNetCallCounter(shared_base_pipe.unet)
    reports = guarded.score(PROMPTS * 2, batch_size=3, num_inference_steps=STEPS, progress=False)
    counter.remove()
    assert counter.calls == 2 * 2  # two batches (3 + 1 prompts), two steps each
    assert len(reports) == 4
    full = _run(guarded, generator=seeded(2)).memorization
    assert [r.score for r in reports[:2]] == pytest.approx([r.score for r in full], rel=1e-5)
    # seeds follow the image index, not the batch: images 2 and 3 use seeds 2 and 3
    later = _run(guarded, generator=seeded(2, seed=2)).memorization
    assert [r.score for r in reports[2:]] == pytest.approx([r.score for r in later], rel=1e-5)


def test_calibrate_picks_a_threshold_for_the_target_rate_and_guards_with_it(shared_base_pipe, tmp_path):
    calibration = memguard.calibrate(
        shared_base_pipe, BENIGN, target_fpr=0.2, num_inference_steps=STEPS, decision_step=1, progress=False
    )
    assert calibration.num_scores == len(BENIGN) and calibration.achieved_fpr <= 0.2
    # the guarantee: the threshold is the rank-th largest benign score, P(rate <= 0.2) >= 0.95
    assert calibration.confidence >= 0.95 and calibration.threshold_rank >= 1
    assert calibration.benign_scores == sorted(calibration.benign_scores, reverse=True)
    assert calibration.benign_scores[calibration.threshold_rank - 1] == pytest.approx(calibration.threshold)
    assert (calibration.dtype, calibration.height, calibration.width) == ("float32", 32, 32)
    assert calibration.model_fingerprint == memguard.model_fingerprint(shared_base_pipe)
    assert calibration.detector == "top_layer_entropy"  # memguard's own score by default
    assert set(calibration.detector_state) == {"layer_stats", "top_layers"}  # fitted on BENIGN, and stored
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    reports = guarded.score(BENIGN, num_inference_steps=STEPS, progress=False)
    assert {r.detector for r in reports} == {"top_layer_entropy"}
    scores = [r.score for r in reports]
    assert sum(s > calibration.threshold for s in scores) == calibration.threshold_rank - 1
    path = tmp_path / "calibration.json"
    calibration.save(path)
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=path))
    out = _run(guarded)
    assert {(r.threshold, r.threshold_source) for r in out.memorization} == {(calibration.threshold, "calibration")}
    assert Calibration.load(path) == calibration


def test_the_standardized_detector_is_fitted_by_its_calibration_and_refused_without_one(shared_base_pipe, tmp_path):
    name = "bottleneck_entropy_standardized"
    with pytest.raises(ValueError, match="needs per-layer statistics"):
        GuardConfig(detector=name, threshold=0.5)  # nothing to standardize with: refused at once
    calibration = memguard.calibrate(
        shared_base_pipe, BENIGN, target_fpr=0.2, num_inference_steps=STEPS, detector=name, progress=False
    )
    stats = calibration.detector_state["layer_stats"]
    assert calibration.detector == name and stats and calibration.layer_stats is None
    assert all(std > 0 for _, std in stats.values())
    path = tmp_path / "calibration.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration  # the statistics survive JSON
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=path))
    assert guarded.guard_config.effective_detector.layer_stats  # fitted from the file
    scores = [r.score for r in guarded.score(BENIGN, num_inference_steps=STEPS, progress=False)]
    # The same prompts and seeds: each layer standardized on them has mean 0, and so has their average.
    assert sum(scores) / len(scores) == pytest.approx(0.0, abs=1e-5)
    assert sum(s > calibration.threshold for s in scores) == calibration.threshold_rank - 1
    with pytest.raises(ValueError, match="must be \\[mean, std\\]"):  # a format-1 file's statistics
        Calibration(**{**calibration.to_dict(), "layer_stats": {"mid_block": [0.5]}})
    # a format-1 calibration with layer_stats fits the detector just the same
    old = Calibration(**{**calibration.to_dict(), "detector_state": None, "layer_stats": stats})
    assert GuardConfig(calibration=old).effective_detector == guarded.guard_config.effective_detector


def test_the_combined_detector_is_fitted_saved_and_loaded_by_its_calibration(shared_base_pipe, tmp_path):
    name = "attention_noise"
    calibration = memguard.calibrate(
        shared_base_pipe, BENIGN, target_fpr=0.2, num_inference_steps=STEPS, detector=name, progress=False
    )
    state = calibration.detector_state
    assert calibration.detector == name and set(state) == {"layer_stats", "attention_stats", "noise_stats"}
    path = tmp_path / "calibration.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=path))
    assert guarded.guard_config.effective_detector.fitted
    scores = [r.score for r in guarded.score(BENIGN, num_inference_steps=STEPS, progress=False)]
    # both parts are standardized on these very prompts and seeds, so their sum averages 0
    assert sum(scores) / len(scores) == pytest.approx(0.0, abs=1e-5)
    assert sum(s > calibration.threshold for s in scores) == calibration.threshold_rank - 1
    broken = {**calibration.to_dict(), "detector_state": {**state, "noise_stats": [0.1, -1.0]}}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="noise_stats"):
        _ = GuardConfig(calibration=tmp_path / "broken.json").effective_detector


def test_your_own_detector_is_registered_fitted_calibrated_saved_and_loaded_by_name(shared_base_pipe, tmp_path):
    from dataclasses import dataclass, field, replace

    import torch

    from memguard.detection import DETECTORS, get_detector, register_detector
    from memguard.signals import SignalNeeds

    @dataclass(frozen=True)
    class ZNoise:  # the noise magnitude, standardized on the model's benign prompts
        mean: float | None = None
        spread: float | None = None
        name: str = "z_noise"
        needs: SignalNeeds = field(default=SignalNeeds())
        default_threshold: float | None = None

        @property
        def fitted(self):
            return self.mean is not None

        def features(self, trace, upto_step):
            return {"rms": torch.stack([trace.steps[s].noise_rms for s in range(upto_step)]).mean(dim=0)}

        def fit(self, features):
            rms = features["rms"].double()
            return replace(self, mean=float(rms.mean()), spread=float(rms.std()))

        def score_features(self, features):
            return (features["rms"].double() - self.mean) / self.spread

        def score(self, trace, upto_step):
            return self.score_features(self.features(trace, upto_step))

        def state(self):
            return {"mean": self.mean, "spread": self.spread}

        def with_state(self, state):
            return replace(self, mean=state["mean"], spread=state["spread"])

    register_detector("z_noise", ZNoise)
    try:
        with pytest.raises(ValueError, match="registered already"):
            register_detector("z_noise", ZNoise)
        calibration = memguard.calibrate(
            shared_base_pipe, BENIGN, target_fpr=0.2, num_inference_steps=STEPS, detector="z_noise", progress=False
        )
        assert calibration.detector == "z_noise" and set(calibration.detector_state) == {"mean", "spread"}
        path = tmp_path / "calibration.json"
        calibration.save(path)
        config = GuardConfig(calibration=path)  # loaded by name, fitted from the file
        assert config.effective_detector.fitted and config.effective_detector.mean == calibration.detector_state["mean"]
        scores = [
            r.score
            for r in memguard.guard(shared_base_pipe, config).score(BENIGN, num_inference_steps=STEPS, progress=False)
        ]
        assert sum(scores) / len(scores) == pytest.approx(0.0, abs=1e-6)  # standardized on these very prompts
        assert sum(s > calibration.threshold for s in scores) == calibration.threshold_rank - 1
        assert get_detector("z_noise").fitted is False
    finally:
        DETECTORS.pop("z_noise", None)


def test_a_call_that_differs_from_its_calibration_warns_without_naming_the_prompt(shared_base_pipe):
    calibration = memguard.calibrate(
        shared_base_pipe, BENIGN, target_fpr=0.2, num_inference_steps=STEPS, progress=False
    )
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    with pytest.warns(UserWarning, match="num_inference_steps: 3 vs 6") as caught:
        _run(guarded, num_inference_steps=3)
    assert caught[0].filename == __file__  # points at the caller's line, not into memguard
    assert not any(p in str(w.message) for w in caught for p in PROMPTS)
