"""The public pipeline API: wrapping, arguments, outputs and bit-identity with the parent."""

import json
import threading
import warnings

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from diffusers.callbacks import SDCFGCutoffCallback
from helpers import PROMPTS, UNetCallCounter, seeded

import memguard
from memguard import GuardConfig, GuardedPipelineOutput, GuardedStableDiffusionPipeline, MemorizationReport, Policy

STEPS = 4


def _run(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("generator", seeded(len(PROMPTS) * kwargs.get("num_images_per_prompt", 1)))
    kwargs.setdefault("output_type", "np")
    return pipe(PROMPTS, **kwargs)


def test_guard_shares_modules_of_the_wrapped_pipeline(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    assert isinstance(guarded, GuardedStableDiffusionPipeline)
    assert isinstance(guarded, StableDiffusionPipeline)
    for name in ("unet", "vae", "text_encoder"):
        assert getattr(guarded, name) is getattr(shared_base_pipe, name)
    # the scheduler (its steps) and the fast tokenizer (its padding settings) hold per-call state:
    # each wrapper has its own, configured the same
    assert guarded.scheduler is not shared_base_pipe.scheduler
    assert dict(guarded.scheduler.config) == dict(shared_base_pipe.scheduler.config)
    assert guarded.tokenizer is not shared_base_pipe.tokenizer
    assert guarded.tokenizer("a red circle").input_ids == shared_base_pipe.tokenizer("a red circle").input_ids
    config = GuardConfig(policy=Policy.uniform("block"))
    assert GuardedStableDiffusionPipeline.from_pipe(shared_base_pipe, guard=config).guard_config is config
    # Re-wrapping a guarded pipeline keeps its config unless a new one is given.
    assert GuardedStableDiffusionPipeline.from_pipe(memguard.guard(shared_base_pipe, config)).guard_config is config


def test_from_pretrained_loads_a_saved_pipeline_with_a_guard(shared_base_pipe, tmp_path):
    shared_base_pipe.save_pretrained(tmp_path)
    config = GuardConfig(decision_step=2)
    pipe = GuardedStableDiffusionPipeline.from_pretrained(tmp_path, guard=config)
    assert isinstance(pipe, GuardedStableDiffusionPipeline)
    assert pipe.guard_config is config
    pipe.set_progress_bar_config(disable=True)
    out = _run(pipe)
    assert [r.decided_at_step for r in out.memorization] == [2, 2]
    with pytest.raises(TypeError, match="GuardConfig"):
        GuardedStableDiffusionPipeline.from_pretrained(tmp_path, guard={"policy": "block"})


@pytest.mark.parametrize("output_type", ["np", "pt", "pil", "latent"])
def test_flag_mode_and_disabled_guard_are_bit_identical_to_the_parent(shared_base_pipe, output_type):
    reference = _run(shared_base_pipe, output_type=output_type).images
    for config in (
        GuardConfig(policy=Policy.uniform("flag"), threshold=-1.0),
        GuardConfig(enabled=False),
    ):  # -1: every image is flagged
        out = _run(memguard.guard(shared_base_pipe, config), output_type=output_type)
        assert isinstance(out, GuardedPipelineOutput)
        if output_type == "pil":
            assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(reference, out.images, strict=True))
        elif output_type == "np":
            assert np.array_equal(reference, out.images)
        else:
            assert torch.equal(reference, out.images)
        expected = "flagged" if config.enabled else "none"
        assert [r.action for r in out.memorization] == [expected, expected]
    assert {r.status for r in out.memorization} == {"disabled"}


def test_one_report_per_image_in_image_order(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    batch = _run(guarded, num_images_per_prompt=2, generator=seeded(4))
    assert len(batch.images) == 4 and len(batch.memorization) == 4
    assert all(isinstance(r, MemorizationReport) for r in batch.memorization)
    # Image order is prompt-major: [p0 img0, p0 img1, p1 img0, p1 img1]. Scoring each image alone with
    # its own generator must give the same score at the same position.
    for index, (prompt, seed) in enumerate([(0, 0), (0, 1), (1, 2), (1, 3)]):
        alone = guarded(PROMPTS[prompt], num_inference_steps=STEPS, generator=seeded(1, seed), output_type="np")
        assert alone.memorization[0].score == pytest.approx(batch.memorization[index].score, rel=1e-4)
    scores = [r.score for r in batch.memorization]
    assert len(set(scores)) == 4  # different images, different scores: the test above is not vacuous


def test_return_dict_false_returns_the_parents_tuple_and_keeps_the_reports(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    assert guarded.last_memorization is None
    images, nsfw = _run(guarded, return_dict=False)  # code written for the parent unpacks two items
    assert np.array_equal(images, _run(shared_base_pipe, return_dict=False)[0]) and nsfw is None
    reports = guarded.last_memorization
    assert len(reports) == 2 and all(isinstance(r, MemorizationReport) for r in reports)
    # the reports are the calling thread's: another thread sees its own (none yet)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(guarded.last_memorization))
    thread.start()
    thread.join()
    assert seen == [None]


def test_reports_are_json_serializable(shared_base_pipe):
    out = _run(memguard.guard(shared_base_pipe))
    for report in out.memorization:
        data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        assert data["status"] == "checked" and data["decided_at_step"] == 1
        assert set(data["signals"]) >= {"noise_norm", "noise_rms", "attention_entropy", "attention_begin_mass"}
        assert data["threshold_source"] == "default" and report.calibrated is False
        assert data["guard_seconds"] > 0


def test_users_step_callback_is_chained_not_replaced(shared_base_pipe):
    seen = []

    def user_callback(pipe, step, timestep, kwargs):
        seen.append((step, tuple(kwargs)))
        return {"latents": kwargs["latents"] * 0.5}  # the user's edits must take effect

    guarded = memguard.guard(shared_base_pipe)
    out = _run(
        guarded, callback_on_step_end=user_callback, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]
    )
    assert seen == [(i, ("latents", "prompt_embeds")) for i in range(STEPS)]
    reference = _run(shared_base_pipe, callback_on_step_end=user_callback)
    assert np.array_equal(out.images, reference.images)
    assert len(out.memorization) == 2


def test_diffusers_pipeline_callbacks_work_and_guidance_cutoff_is_handled(shared_base_pipe):
    # SDCFGCutoffCallback keeps prompt_embeds[-1:], so diffusers supports it for one prompt only.
    def run(pipe):
        cutoff = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=2)
        return pipe(
            PROMPTS[0], num_inference_steps=STEPS, generator=seeded(1), output_type="np", callback_on_step_end=cutoff
        )

    counter = UNetCallCounter(shared_base_pipe.unet)
    out = run(memguard.guard(shared_base_pipe, GuardConfig(decision_step=2, record_all_steps=True)))
    counter.remove()
    assert counter.batches == [2, 2, 2, 1]  # CFG batch until the cutoff, then the text half only
    assert np.array_equal(out.images, run(shared_base_pipe).images)
    assert out.memorization[0].status == "checked"


def test_prompt_embeds_and_negative_prompts(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    embeds, negative = shared_base_pipe.encode_prompt(PROMPTS, "cpu", 1, True, negative_prompt=["blurry", "dark"])
    by_embeds = guarded(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        num_inference_steps=STEPS,
        generator=seeded(2),
        output_type="np",
    )
    by_text = _run(guarded, negative_prompt=["blurry", "dark"])
    assert np.allclose(by_embeds.images, by_text.images, atol=1e-6)
    assert [r.score for r in by_embeds.memorization] == pytest.approx([r.score for r in by_text.memorization], rel=1e-5)
    plain = _run(guarded)
    assert plain.memorization[0].score != pytest.approx(by_text.memorization[0].score, rel=1e-3)


def test_other_schedulers(shared_base_pipe):
    euler = StableDiffusionPipeline.from_pipe(shared_base_pipe)
    euler.scheduler = EulerDiscreteScheduler.from_config(shared_base_pipe.scheduler.config)
    euler.set_progress_bar_config(disable=True)
    guarded = memguard.guard(euler, GuardConfig(decision_step=3))
    out = _run(guarded)
    assert np.array_equal(out.images, _run(euler).images)
    assert [r.decided_at_step for r in out.memorization] == [3, 3]
    assert all(np.isfinite(r.score) for r in out.memorization)


def test_without_a_calibration_the_guard_observes_and_warns_once(shared_base_pipe):
    reference = _run(shared_base_pipe).images
    # a default threshold every image exceeds: uncalibrated, the guard reports it and touches nothing
    low = memguard.detection.NoiseMagnitudeDetector(default_threshold=-1.0)
    guarded = memguard.guard(shared_base_pipe, GuardConfig(detector=low))
    with pytest.warns(UserWarning, match="no calibration, so its detector only observes.*memguard calibrate") as caught:
        out = _run(guarded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call does not warn again
        again = _run(guarded)
    assert len([w for w in caught if "only observes" in str(w.message)]) == 1
    assert np.array_equal(out.images, reference) and np.array_equal(again.images, reference)
    for report in out.memorization:
        assert report.memorized and report.action == "none" and report.outcome == "observed"
        assert report.threshold_source == "default" and "observed only" in report.reason
    acting = memguard.guard(
        shared_base_pipe, GuardConfig(detector=low, act_uncalibrated=True, policy=Policy.uniform("block"))
    )
    assert {r.outcome for r in _run(acting).memorization} == {"blocked"}
