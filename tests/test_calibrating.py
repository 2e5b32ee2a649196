"""`memguard.calibrate`: what one sample of the guarantee is, and what a calibration can and cannot record."""

import warnings

import numpy as np
import pytest
from helpers import BENIGN_SCENES

import memguard
from memguard import GuardConfig
from memguard.calibration import CalibrationError

STEPS = 3


def test_each_distinct_prompt_is_one_sample_scored_as_its_highest_image(shared_base_pipe):
    prompts = BENIGN_SCENES + BENIGN_SCENES[:5]  # five given twice: still 24 samples
    calibration = memguard.calibrate(
        shared_base_pipe, prompts, target_fpr=0.2, detector="noise_rms", num_images_per_prompt=3,
        num_inference_steps=STEPS, progress=False,
    )  # fmt: skip
    assert calibration.num_scores == len(BENIGN_SCENES)
    images = memguard.guard(shared_base_pipe, GuardConfig(detector="noise_rms", threshold=1e9)).score(
        BENIGN_SCENES, num_images_per_prompt=3, num_inference_steps=STEPS, progress=False
    )
    highest = np.array([r.score for r in images]).reshape(len(BENIGN_SCENES), 3).max(axis=1)
    assert calibration.benign_scores == sorted(highest.tolist(), reverse=True)  # exact, unrounded
    assert calibration.threshold in calibration.benign_scores
    with pytest.raises(ValueError, match="needs at least 14 distinct benign prompts, got 5"):
        memguard.calibrate(shared_base_pipe, BENIGN_SCENES[:5] * 10, target_fpr=0.2, num_images_per_prompt=10)


def test_a_detector_with_settings_a_calibration_cannot_record_is_refused(shared_base_pipe):
    from memguard.detection.attention import AttentionEntropyDetector

    one_layer = AttentionEntropyDetector(layer="up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    with pytest.raises(ValueError, match="settings other than the registered ones"):
        memguard.calibrate(shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, detector=one_layer, progress=False)


def test_a_calibration_of_another_model_is_refused_under_an_explicit_threshold_too(shared_base_pipe):
    from memguard.testbed.tiny import tiny_pipeline

    calibration = memguard.calibrate(
        shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, num_inference_steps=STEPS, progress=False
    )
    other = tiny_pipeline(seed=1)  # other weights: the calibration's fitted statistics describe neither
    with pytest.raises(CalibrationError, match="another model"):
        memguard.guard(other, GuardConfig(calibration=calibration, threshold=1.0))(
            "a red square", num_inference_steps=STEPS
        )


def test_an_img2img_call_like_its_calibration_does_not_warn_and_another_does(tmp_path):
    from memguard.testbed.tiny import tiny_family_pipeline

    pipe = tiny_family_pipeline("stable-diffusion-img2img")
    image = np.random.default_rng(0).random((32, 32, 3)).astype("float32")
    calibration = memguard.calibrate(
        pipe, BENIGN_SCENES, target_fpr=0.2, num_inference_steps=4, image=image, strength=0.5, progress=False
    )
    guarded = memguard.guard(pipe, GuardConfig(calibration=calibration))
    for steps, warns in ((4, False), (8, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            guarded("a red square", image=image, strength=0.5, num_inference_steps=steps)
        differs = [w for w in caught if "differs from its calibration" in str(w.message)]
        assert bool(differs) == warns, [str(w.message) for w in differs]


def test_a_local_model_folder_is_recorded_by_its_name_only(shared_base_pipe, tmp_path):
    folder = tmp_path / "home" / "alice" / "client-acme-v3"
    shared_base_pipe.save_pretrained(folder)
    pipe = type(shared_base_pipe).from_pretrained(folder)
    calibration = memguard.calibrate(pipe, BENIGN_SCENES, target_fpr=0.2, num_inference_steps=STEPS, progress=False)
    assert calibration.model_name == "client-acme-v3"
    assert (
        0.95
        <= calibration.confidence
        <= memguard.thresholds.guaranteed_threshold(calibration.benign_scores, 0.2).confidence
    )  # rounded down, never above what holds


def test_a_detector_fitted_otherwise_than_the_calibration_is_refused(shared_base_pipe):
    from memguard.detection import get_detector

    first = memguard.calibrate(
        shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, num_inference_steps=STEPS, progress=False
    )
    other = memguard.calibrate(
        shared_base_pipe, list(reversed(BENIGN_SCENES))[:20] + ["a tiny grey dot"] * 1 + ["a wide green band"],
        target_fpr=0.25, num_inference_steps=STEPS, progress=False,
    )  # fmt: skip
    fitted_elsewhere = get_detector(first.detector).with_state(other.fitted_state)
    assert fitted_elsewhere.state() != first.fitted_state
    with pytest.raises(ValueError, match="fitted differently from the calibration's detector_state"):
        GuardConfig(calibration=first, detector=fitted_elsewhere)
    GuardConfig(calibration=first, detector=get_detector(first.detector).with_state(first.fitted_state))  # the same fit


def test_the_negative_prompt_served_with_can_be_calibrated_with(shared_base_pipe):
    one = memguard.calibrate(
        shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, negative_prompt="blurry", num_inference_steps=STEPS,
        detector="noise_rms", progress=False,
    )  # fmt: skip
    each = memguard.calibrate(
        shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, negative_prompt=["blurry"] * len(BENIGN_SCENES),
        num_inference_steps=STEPS, detector="noise_rms", progress=False,
    )  # fmt: skip
    plain = memguard.calibrate(
        shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, num_inference_steps=STEPS, detector="noise_rms", progress=False
    )
    assert one.benign_scores == each.benign_scores != plain.benign_scores  # the negative prompt is used
    with pytest.raises(ValueError, match="negative_prompt has 2 entries for 24 prompts"):
        memguard.calibrate(shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, negative_prompt=["a", "b"], progress=False)


def test_weights_loaded_after_the_first_call_are_checked_again():
    from memguard.testbed.tiny import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    calibration = memguard.calibrate(pipe, BENIGN_SCENES, target_fpr=0.2, num_inference_steps=STEPS, progress=False)
    guarded = memguard.guard(pipe, GuardConfig(calibration=calibration))
    guarded("a red square", num_inference_steps=STEPS)  # checked, and remembered
    guarded.unet.load_state_dict(tiny_pipeline(seed=1).unet.state_dict())  # other weights, in place
    with pytest.raises(CalibrationError, match="another model"):
        guarded("a red square", num_inference_steps=STEPS)
