"""GuardConfig.on_error: a failure of the guard itself never returns an unguarded image silently."""

import numpy as np
import pytest
import torch
from helpers import PROMPTS, seeded
from prometheus_client import CollectorRegistry

import memguard
from memguard import GuardConfig, Policy
from memguard.metrics import GuardMetrics
from memguard.signals import SignalRecorder

STEPS = 4
SECRET = "a private prompt about Zorblax"


def _boom(*args, **kwargs):
    raise RuntimeError(f"hook failed on {SECRET}")


def _run(pipe, config):
    return memguard.guard(pipe, config)(
        [SECRET, PROMPTS[0]], num_inference_steps=STEPS, generator=seeded(2), output_type="np"
    )


def _errors(registry, kind="RuntimeError"):
    """The guard's own errors of this class (source="guard": the guard failed, not the pipeline)."""
    labels = {"pipeline": "t", "source": "guard", "kind": kind}
    return registry.get_sample_value("memguard_guard_errors_by_kind_total", labels) or 0.0


@pytest.mark.parametrize("where", ["on_unet_output", "on_cross_attention"])
def test_fail_closed_blocks_every_image_and_counts_the_error(shared_base_pipe, monkeypatch, where):
    registry = CollectorRegistry()
    monkeypatch.setattr(SignalRecorder, where, _boom)
    out = _run(shared_base_pipe, GuardConfig(name="t", metrics=GuardMetrics(registry), threshold=0.1))
    assert np.all(out.images == 0)
    for report in out.memorization:
        assert report.status == "error" and report.action == "blocked"
        assert (
            "RuntimeError" in report.reason and SECRET not in report.reason and "Zorblax" not in str(report.to_dict())
        )
    assert _errors(registry) == 1.0
    assert registry.get_sample_value("memguard_images_total", {"pipeline": "t", "outcome": "blocked"}) == 2.0


def test_fail_open_returns_the_unguarded_images_and_says_so(shared_base_pipe, monkeypatch):
    reference = shared_base_pipe(
        [SECRET, PROMPTS[0]], num_inference_steps=STEPS, generator=seeded(2), output_type="np"
    ).images
    registry = CollectorRegistry()
    monkeypatch.setattr(SignalRecorder, "on_unet_output", _boom)
    config = GuardConfig(name="t", metrics=GuardMetrics(registry), threshold=0.1, on_error="fail_open")
    out = _run(shared_base_pipe, config)
    assert np.array_equal(out.images, reference)
    assert {(r.status, r.action) for r in out.memorization} == {("error", "none")}
    assert _errors(registry) == 1.0
    assert registry.get_sample_value("memguard_images_total", {"pipeline": "t", "outcome": "error"}) == 2.0


class _BrokenMitigation:
    name = "broken"

    def apply(self, plan, context):
        raise ValueError(f"cannot mitigate {SECRET}")


@pytest.mark.parametrize(("on_error", "action"), [("fail_closed", "blocked"), ("fail_open", "blocked")])
def test_a_failing_resample_never_returns_the_memorized_image_unmarked(shared_base_pipe, on_error, action):
    # every image is memorized (threshold below any score), so the first pass stops at the decision
    # step: there is no finished image to return, even when failing open
    registry = CollectorRegistry()
    config = GuardConfig(
        name="t",
        metrics=GuardMetrics(registry),
        threshold=-1.0,
        policy=Policy(unintended="resample"),
        mitigation=_BrokenMitigation(),
        on_error=on_error,
    )
    out = _run(shared_base_pipe, config)
    assert [(r.status, r.action) for r in out.memorization] == [("error", action)] * 2
    assert np.all(out.images == 0)
    assert _errors(registry, "ValueError") == 2.0
    assert all(SECRET not in (r.reason or "") for r in out.memorization)


def test_on_error_must_be_a_known_word():
    with pytest.raises(ValueError, match="on_error"):
        GuardConfig(on_error="ignore")


def test_non_finite_latents_fail_closed_instead_of_passing_as_unavailable(shared_base_pipe):
    latents = torch.full((2, 4, 8, 8), float("nan"))
    out = memguard.guard(shared_base_pipe, GuardConfig(policy=Policy.uniform("block"), threshold=0.1))(
        [SECRET, PROMPTS[0]], num_inference_steps=STEPS, latents=latents, output_type="np"
    )
    assert [(r.status, r.action) for r in out.memorization] == [("error", "blocked")] * 2
    assert "FloatingPointError" in out.memorization[0].reason and not np.asarray(out.images).any()


def test_a_failing_metrics_layer_never_costs_the_images(shared_base_pipe, caplog):
    class BrokenMetrics(GuardMetrics):
        def observe_call(self, pipeline, reports):
            raise OSError("the metrics backend is down")

    reference = shared_base_pipe(PROMPTS, num_inference_steps=STEPS, generator=seeded(2), output_type="np").images
    config = GuardConfig(metrics=BrokenMetrics(CollectorRegistry()), threshold=1e9)
    out = memguard.guard(shared_base_pipe, config)(
        PROMPTS, num_inference_steps=STEPS, generator=seeded(2), output_type="np"
    )
    assert np.array_equal(out.images, reference) and len(out.memorization) == 2
    assert "recording metrics failed (OSError)" in caplog.text


def test_a_detector_score_that_is_not_finite_is_a_guard_failure_not_unavailable(shared_base_pipe):
    from dataclasses import dataclass

    from memguard.detection.noise import NoiseMagnitudeDetector

    @dataclass(frozen=True)
    class Ratio(NoiseMagnitudeDetector):  # a detector of one's own that divides by a spread of 0
        name: str = "ratio"

        def score(self, trace, upto_step):
            score = super().score(trace, upto_step)
            return (score - score) / (score - score)

    registry = CollectorRegistry()
    config = GuardConfig(
        name="t", metrics=GuardMetrics(registry), detector=Ratio(), threshold=0.1, policy=Policy.uniform("block")
    )
    out = _run(shared_base_pipe, config)
    assert [(r.status, r.action) for r in out.memorization] == [("error", "blocked")] * 2
    assert "FloatingPointError" in out.memorization[0].reason and not np.asarray(out.images).any()
    assert _errors(registry, "FloatingPointError") == 1.0


@pytest.mark.parametrize("error", [RuntimeError("request cancelled"), KeyError(SECRET)], ids=["runtime", "key"])
def test_the_callers_callback_failing_in_a_resample_propagates_with_its_type(shared_base_pipe, error):
    calls = []

    def cancel_in_the_resample(pipe, step, timestep, kwargs):
        calls.append(step)
        if len(calls) > 1 and step == 0:  # the re-sample's first step: the first pass already ran one
            raise error
        return kwargs

    registry = CollectorRegistry()
    config = GuardConfig(name="t", metrics=GuardMetrics(registry), threshold=-1.0, policy=Policy(max_attempts=1))
    with pytest.raises(type(error)) as raised:
        memguard.guard(shared_base_pipe, config)(
            SECRET, num_inference_steps=STEPS, generator=seeded(1), callback_on_step_end=cancel_in_the_resample
        )
    assert "Zorblax" not in str(raised.value)  # a KeyError quoting the prompt keeps its type, not its text
    pipeline_errors = {"pipeline": "t", "source": "pipeline"}
    assert registry.get_sample_value("memguard_guard_errors_total", pipeline_errors) == 1.0
    assert registry.get_sample_value("memguard_guard_errors_total", {"pipeline": "t", "source": "guard"}) == 0.0
