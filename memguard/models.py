"""Which model a command runs on: "testbed" (the shipped model, offline), "tiny" (a random toy SD
pipeline for tests and smoke runs) or any diffusers model id / local path (`from_pretrained`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

TESTBED = "testbed"
TINY = "tiny"


@dataclass(frozen=True)
class GuardDefaults:
    """Files a model ships for the guard: its calibration and intent registry (None: none shipped)."""

    calibration: Path | None = None
    registry: Path | None = None


def load_pipeline(
    model: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[StableDiffusionPipeline, str]:
    """(plain, unguarded pipeline, description). `model` is "testbed", "tiny" or a hub id / local path."""
    if model == TINY:
        from .testbed.tiny import tiny_pipeline

        pipe, name = tiny_pipeline(), "tiny random SD pipeline (untrained, 32x32)"
    elif model == TESTBED:
        from . import testbed

        pipe, name = StableDiffusionPipeline.from_pretrained(testbed.MODEL_DIR, torch_dtype=dtype), "memguard testbed"
    else:
        pipe, name = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dtype, safety_checker=None), model
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), name


def guard_defaults(model: str) -> GuardDefaults:
    """The testbed ships a calibration and a registry; other models have none until the operator makes them."""
    if model != TESTBED:
        return GuardDefaults()
    from . import testbed
    from .testbed.calibrate import CALIBRATION_FILE

    calibration = testbed.MODEL_DIR / CALIBRATION_FILE
    return GuardDefaults(calibration if calibration.is_file() else None, testbed.REGISTRY_FILE)
