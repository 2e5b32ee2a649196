"""Which model a benchmark runs on: the shipped testbed by default, a tiny random SD pipeline, or any
diffusers model id / local path (loaded with `StableDiffusionPipeline.from_pretrained`)."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline


def load_pipeline(
    model: str, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[StableDiffusionPipeline, str]:
    """(pipeline, description). `model` is "testbed", "tiny" or a hub id / local path."""
    if model == "tiny":
        from memguard.testbed.tiny import tiny_pipeline

        pipe, name = tiny_pipeline(), "tiny random SD pipeline (untrained, 32x32)"
    elif model == "testbed":  # the plain diffusers pipeline over the shipped weights: an unguarded baseline
        from memguard import testbed

        pipe, name = StableDiffusionPipeline.from_pretrained(testbed.MODEL_DIR, torch_dtype=dtype), "memguard testbed"
    else:
        pipe, name = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dtype, safety_checker=None), model
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), name
