"""Which model a command runs on: "testbed" (the shipped model, offline), "testbed-xl" (its SDXL
variant), "tiny" (a random toy SD pipeline for tests and smoke runs) or any diffusers model id / local
path (`from_pretrained`, which reads the pipeline class from the model's own index)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

TESTBED = "testbed"
TESTBED_XL = "testbed-xl"
TINY = "tiny"


@dataclass(frozen=True)
class GuardDefaults:
    """Files a model ships for the guard: its calibration and intent registry (None: none shipped)."""

    calibration: Path | None = None
    registry: Path | None = None


def _testbed_dir(model: str) -> Path:
    from . import testbed

    return testbed.folder(model)


def load_pipeline(
    model: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    safety_checker: bool = True,
):
    """(plain, unguarded pipeline, description). `model` is "testbed", "testbed-xl", "tiny" or a hub id /
    local path (any pipeline class memguard guards). The model's own safety checker is kept unless
    `safety_checker=False` (the testbeds ship none)."""
    if model == TINY:
        from .testbed.tiny import tiny_pipeline

        pipe, name = tiny_pipeline().to(dtype=dtype), "tiny random SD pipeline (untrained, 32x32)"
    elif model in (TESTBED, TESTBED_XL):
        name = "memguard testbed" if model == TESTBED else "memguard testbed (SDXL architecture)"
        pipe = DiffusionPipeline.from_pretrained(_testbed_dir(model), dtype=dtype)
    else:
        extra = {}
        if not safety_checker and "safety_checker" in DiffusionPipeline.load_config(model):
            extra = {"safety_checker": None, "requires_safety_checker": False}
        pipe, name = DiffusionPipeline.from_pretrained(model, dtype=dtype, **extra), model
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), name


def guard_defaults(model: str) -> GuardDefaults:
    """The testbeds ship a calibration and a registry; other models have none until the operator makes them."""
    if model not in (TESTBED, TESTBED_XL):
        return GuardDefaults()
    from . import testbed
    from .testbed.calibrate import CALIBRATION_FILE

    calibration = _testbed_dir(model) / CALIBRATION_FILE
    return GuardDefaults(calibration if calibration.is_file() else None, testbed.REGISTRY_FILE)
