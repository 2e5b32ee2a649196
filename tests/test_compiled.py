"""A UNet compiled with `torch.compile`: the guard reads its signals around the compiled graph and
never makes it break or recompile; an in-place compiled UNet is refused with the way that works."""

import numpy as np
import pytest
import torch
from helpers import seeded
from torch._dynamo.utils import counters

import memguard
from memguard import GuardConfig, Policy
from memguard.signals import is_installed
from memguard.testbed.tiny import tiny_pipeline

STEPS = 3


def _run(pipe, prompts=("a red circle", "a blue square")):
    return pipe(list(prompts), num_inference_steps=STEPS, generator=seeded(len(prompts)), output_type="np")


def test_a_compiled_unet_is_guarded_without_graph_breaks_or_recompiles():
    pipe = tiny_pipeline(seed=0)
    pipe.unet = torch.compile(pipe.unet, backend="eager")  # dynamo's tracing, without a C++ build
    reference = _run(pipe).images  # compiles once
    counters.clear()
    flagged = _run(memguard.guard(pipe, GuardConfig(policy=Policy.uniform("flag"), threshold=-1.0)))
    resampled = _run(memguard.guard(pipe, GuardConfig(threshold=-1.0, policy=Policy(max_attempts=1))))
    again = _run(pipe).images
    assert np.array_equal(flagged.images, reference) and np.array_equal(again, reference)
    assert {r.action for r in flagged.memorization} == {"flagged"}
    assert "attention_entropy" in flagged.memorization[0].signals  # read by an eager pass of the module
    assert {r.action for r in resampled.memorization} == {"resampled"}
    assert not counters["graph_break"] and not counters["recompiles"]
    assert not is_installed(pipe.unet._orig_mod)


def test_an_in_place_compiled_unet_is_refused_with_the_way_that_works():
    pipe = tiny_pipeline(seed=0)
    pipe.unet.compile(backend="eager")
    with pytest.raises(TypeError, match=r"pipe.unet = torch.compile\(pipe.unet\)"):
        _run(memguard.guard(pipe))
