"""Detectors on the text-conditional noise prediction eps(x_t, c) - eps(x_t, "")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import mean_over_steps, unavailable

# Uncalibrated default for "noise_rms": a rough, resolution-free guess that every operator should
# replace with `memguard.calibrate` on their own model's benign prompts; reports made with it say
# threshold_source="default".
DEFAULT_THRESHOLD = 0.2


@dataclass(frozen=True)
class NoiseMagnitudeDetector:
    """Wen et al. 2024: the magnitude of the text-conditional noise prediction averaged over the
    first k steps, as a per-element RMS so the score does not grow with the latent resolution (the
    paper's L2 norm divided by a constant of the model: the same ranking)."""

    name: str = "noise_rms"
    needs: SignalNeeds = field(default=SignalNeeds())
    default_threshold: float | None = DEFAULT_THRESHOLD
    score_range: ClassVar[tuple[float, float]] = (0.0, math.inf)  # an RMS

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        scores = mean_over_steps(trace, upto_step, "noise_rms")
        return unavailable(trace) if scores is None else scores


@dataclass(frozen=True)
class HessianDetector:
    """Jeon et al. 2025: sharpness of the text-conditional score at the first step,
    ||H_c v - H_u v|| with v = -(eps_c - eps_u)/sigma, from one Jacobian-vector product.

    With score = -eps/sigma, H_c v - H_u v = (J_c - J_u)(eps_c - eps_u) / sigma^2; at a fixed first
    step sigma is one constant, so this reports the RMS of (J_c - J_u)(eps_c - eps_u) (same ranking).
    Costs one forward-mode pass of the UNet (about 2-4 plain passes) per call.
    """

    name: str = "jeon_hessian"
    needs: SignalNeeds = field(default=SignalNeeds(hessian_first_step=True))
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (0.0, math.inf)  # an RMS

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        entry = trace.steps.get(0)
        if entry is None or entry.hessian_rms is None:
            return unavailable(trace)
        return entry.hessian_rms.float().cpu()
