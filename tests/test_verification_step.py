"""Copy verification as the guarded call's last step (GuardConfig.verification)."""

import numpy as np
import pytest
from conftest import UNetCallCounter, seeded
from prometheus_client import CollectorRegistry

import memguard
from memguard import GuardConfig, Policy
from memguard.metrics import GuardMetrics
from memguard.mitigation import Compose, GuidanceSchedule, ReSeed
from memguard.verify import CopyVerification, PixelEncoder, VerificationIndex

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
