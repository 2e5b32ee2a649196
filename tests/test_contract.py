"""The parent's contract under every scheduler: images the guard does not act on are the parent's,
bit for bit, under every policy, and the caller's generator advances exactly as the parent's."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler, StableDiffusionPipeline
from diffusers.schedulers import KarrasDiffusionSchedulers

import memguard
from memguard import GuardConfig, Policy

PROMPTS = ["a red circle at the top left", "a blue square on a green background"]
STEPS = 4
SCHEDULERS = [member.name for member in KarrasDiffusionSchedulers] + ["LCMScheduler", "DDIMScheduler(eta=0.5)"]


def _scheduled(base, name: str):
    import diffusers

    pipe = StableDiffusionPipeline.from_pipe(base)
    cls = getattr(diffusers, name.split("(")[0])
    # DPMSolverSDE draws its Brownian noise from the global RNG unless seeded: the parent itself
    # gives a new image on every call without noise_sampler_seed
    seeded = {"noise_sampler_seed": 0} if name == "DPMSolverSDEScheduler" else {}
    pipe.scheduler = cls.from_config(base.scheduler.config, **seeded)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, name: str):
    generator = torch.Generator().manual_seed(3)  # one generator for the batch: its state is checked
    extra = {"eta": 0.5} if "eta" in name else {}
    images = pipe(PROMPTS, num_inference_steps=STEPS, generator=generator, output_type="np", **extra).images
    return images, generator.get_state()


def test_every_karras_scheduler_and_lcm_is_covered():
    assert len(SCHEDULERS) == len(KarrasDiffusionSchedulers) + 2
    assert {DDIMScheduler.__name__, LCMScheduler.__name__} <= set(SCHEDULERS)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_images_the_guard_leaves_alone_are_the_parents_under_every_policy(shared_base_pipe, name):
    pipe = _scheduled(shared_base_pipe, name)
    reference, state = _run(pipe, name)
    flagged = memguard.guard(pipe, GuardConfig(policy=Policy.uniform("flag"), threshold=-1.0))
    images, flag_state = _run(flagged, name)
    assert np.array_equal(images, reference) and torch.equal(flag_state, state)
    scores = [r.score for r in flagged.last_memorization]  # the reports of this thread's last call
    assert scores[0] != scores[1]
    # A threshold between the two scores: the guard acts on exactly one image, never on the other.
    middle = (scores[0] + scores[1]) / 2
    acted = int(np.argmax(scores))
    for policy in (Policy.uniform("block"), Policy(max_attempts=1)):  # block, and the default re-sample
        guarded = memguard.guard(pipe, GuardConfig(policy=policy, threshold=middle))
        images, guarded_state = _run(guarded, name)
        reports = guarded.last_memorization
        assert reports[acted].action in ("blocked", "resampled")
        assert reports[1 - acted].action == "none"
        assert np.array_equal(images[1 - acted], reference[1 - acted])
        assert not np.array_equal(images[acted], reference[acted])
        assert torch.equal(guarded_state, state)  # re-samples draw from a generator of their own
    again, _ = _run(guarded, name)
    assert np.array_equal(again, images)  # the same seed gives the same images, re-samples included
