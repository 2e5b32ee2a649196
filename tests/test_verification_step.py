"""Copy verification as the guarded call's last step (GuardConfig.verification)."""

import numpy as np
import pytest
from helpers import UNetCallCounter, seeded
from prometheus_client import CollectorRegistry

import memguard
from memguard import GuardConfig, Policy
from memguard.metrics import GuardMetrics
from memguard.mitigation import Compose, GuidanceSchedule, ReSeed
from memguard.verify import CopyVerification, PixelEncoder, VerificationIndex, calibrate_copy_threshold

STEPS = 3
PROMPT = "a red square on a blue background"


def _call(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("generator", seeded(1, 3))
    kwargs.setdefault("output_type", "np")
    return pipe(PROMPT, **kwargs)


@pytest.fixture(scope="module")
def protected(shared_base_pipe):
    """An index holding the unguarded image of PROMPT (the 'training image' the model would copy)."""
    image = _call(shared_base_pipe).images[0]
    noise = np.random.default_rng(0).random((4, *image.shape))
    return image, VerificationIndex.build([image, *noise], ["copy-me", "a", "b", "c", "d"], PixelEncoder(size=16))


def test_a_copy_the_detector_missed_takes_the_fallback_and_is_counted(shared_base_pipe, protected):
    image, index = protected
    metrics = GuardMetrics(CollectorRegistry())
    for fallback, expected in (("flag", "flagged"), ("block", "blocked")):
        config = GuardConfig(
            threshold=1e9,  # the detector passes everything
            verification=CopyVerification(index, threshold=0.99),
            policy=Policy(fallback=fallback),
            metrics=metrics,
        )
        out = _call(memguard.guard(shared_base_pipe, config))
        (report,) = out.memorization
        assert report.copy.nearest_id == "copy-me" and report.copy.similarity > 0.99 and report.copy.copied
        assert report.action == expected and "copy verification" in report.reason
        assert np.array_equal(out.images[0], image) if fallback == "flag" else not out.images.any()
        assert report.to_dict()["copy"]["copied"] is True
    value = metrics.registry.get_sample_value
    assert value("memguard_copy_checks_total", {"pipeline": "default", "result": "copy"}) == 2


def test_an_image_unlike_every_protected_one_is_left_alone(shared_base_pipe, protected):
    _, index = protected
    config = GuardConfig(threshold=1e9, verification=CopyVerification(index, threshold=0.99))
    out = _call(memguard.guard(shared_base_pipe, config), generator=seeded(1, 4))  # another sample
    (report,) = out.memorization
    assert report.action == "none" and not report.copy.copied and report.copy.similarity < 0.99
    assert np.array_equal(out.images, _call(shared_base_pipe, generator=seeded(1, 4)).images)


class _FailingEncoder(PixelEncoder):
    """Encodes the protected images, then fails on every generation (as a GPU encoder out of memory would)."""

    failing = False

    def encode(self, images):
        if self.failing:
            raise RuntimeError("out of memory")
        return super().encode(images)


@pytest.mark.parametrize("on_error", ["fail_closed", "fail_open"])
def test_a_failed_copy_check_follows_on_error_and_is_counted(shared_base_pipe, on_error):
    encoder = _FailingEncoder(size=16)
    index = VerificationIndex.build([np.zeros((16, 16, 3))], ["protected"], encoder)
    encoder.failing = True
    metrics = GuardMetrics(CollectorRegistry())
    config = GuardConfig(threshold=1e9, verification=CopyVerification(index, 0.9), on_error=on_error, metrics=metrics)
    out = _call(memguard.guard(shared_base_pipe, config))  # returns: the failure is the guard's, not the caller's
    (report,) = out.memorization
    assert report.status == "error" and "RuntimeError" in report.reason and report.copy is None
    if on_error == "fail_closed":
        assert report.action == "blocked" and not out.images.any()
    else:
        assert report.action == "none" and np.array_equal(out.images, _call(shared_base_pipe).images)
    assert (
        metrics.registry.get_sample_value("memguard_guard_errors_total", {"pipeline": "default", "source": "guard"})
        == 1
    )


def test_a_resample_that_still_copies_is_retried_then_takes_the_fallback(shared_base_pipe, protected):
    _, index = protected
    # Every image "copies" (threshold -1), and this mitigation is not re-scored at the decision step,
    # so only verification can send an attempt back: each attempt runs to the end and fails.
    config = GuardConfig(
        threshold=-1.0,
        verification=CopyVerification(index, threshold=-1.0),
        mitigation=Compose((ReSeed(), GuidanceSchedule(-2.0, 500.0))),
        policy=Policy(max_attempts=2, fallback="flag"),
    )
    counter = UNetCallCounter(shared_base_pipe.unet)
    out = _call(memguard.guard(shared_base_pipe, config))
    counter.remove()
    (report,) = out.memorization
    assert counter.calls == 1 + 2 * STEPS  # the first generation stops at step 1, both attempts finish
    assert [a.copied for a in report.attempts] == [None, True, True]
    assert report.action == "flagged" and report.reason.startswith("still copies a protected image")
    assert report.intent == "unintended"


def test_verification_needs_decoded_images_and_a_real_index(shared_base_pipe, protected):
    _, index = protected
    guarded = memguard.guard(shared_base_pipe, GuardConfig(verification=CopyVerification(index, threshold=0.9)))
    with pytest.raises(ValueError, match="output_type='latent'"):
        _call(guarded, output_type="latent")
    with pytest.raises(TypeError, match="GuardConfig.verification"):
        GuardConfig(verification=index)
    with pytest.raises(ValueError, match="cosine similarity"):
        CopyVerification(index, threshold=1.5)
    with pytest.raises(TypeError, match="VerificationIndex"):
        CopyVerification("protected.faiss", threshold=0.9)


def test_calibrated_copy_threshold_lets_through_at_most_the_target_share_of_benign_images():
    rng = np.random.default_rng(0)
    protected_images = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    index = VerificationIndex.build(list(protected_images), [f"p{k}" for k in range(5)], PixelEncoder(size=16))
    # Benign images: protected ones under growing noise, so their similarities spread over a range.
    benign = [
        np.clip(protected_images[k % 5] + rng.normal(0, 20 + k, (16, 16, 3)), 0, 255).astype(np.uint8)
        for k in range(200)
    ]
    threshold = calibrate_copy_threshold(index, benign, target_fpr=0.01)
    copied = [check.copied for check in index.check(benign, threshold)]
    similarities = [matches[0].similarity for matches in index.search(benign, k=1)]
    assert sum(copied) <= 2  # 1% of 200
    assert threshold > sorted(similarities)[-3]  # the third-highest benign image is not a copy
    assert index.check([protected_images[0]], threshold)[0].copied  # an exact copy still is


def test_copy_threshold_calibration_needs_enough_benign_images():
    index = VerificationIndex.build([np.zeros((8, 8, 3), np.uint8)], ["p"], PixelEncoder(size=8))
    with pytest.raises(ValueError, match="at least 100 benign"):
        calibrate_copy_threshold(index, [np.ones((8, 8, 3), np.uint8)] * 10, target_fpr=0.01)
