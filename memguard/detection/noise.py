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


@dataclass(frozen=True)
class AnisotropyDetector:
    """Asthana & Belagiannis 2026 (ICLR; arXiv 2601.20642): the isotropic norm of the guidance plus
    its anisotropic alignment with the unconditional prediction, both on the starting noise:

        score = norm_weight * ||eps(x_T, c, t_1) - eps(x_T, "", t_1)||_2
              + cosine_weight * mean_p cos(eps(x_T, "", t_low)_p, eps(x_T, c, t_low)_p - eps(x_T, "", t_low)_p)

    t_1 is the first step's timestep and t_low a low-noise one; p runs over latent positions and each
    cosine is taken over the channels. Memorized prompts align the guidance with the unconditional
    prediction at low noise, where the norm alone misses them. Defaults: the authors' weights for
    SD 1.4 (1, 2); they use (1, 0.1) on SD 2 and (2, 1) on Realistic Vision: the weights belong to the
    model (register another instance under another name for other weights).

    What we chose where the paper leaves it open or memguard differs:
    - the norm is read from the first step's CFG batch (free: Wen's `noise_norm` at step 1); the
      cosine needs a timestep the loop does not visit at step 1, so the guard runs one extra UNet
      call of its own (the CFG batch, 2N rows) on the same first-step input at t_low. With guidance
      off and `GuardConfig.unconditional_pass`, two (the text and the unconditional branch);
    - t_low is the running schedule's third-to-last timestep (its last when shorter), as the authors'
      code reads it (41 for SD's 50-step DDIM schedule). It follows the step count and the scheduler's
      units: calibrate at the step count you serve (a calibration warns when a call differs);
    - the input is the first step's UNet input as the pipeline built it: the scaled x_T (img2img and
      inpainting: the noised image, not pure noise); ControlNet's first-step residuals are reused at
      t_low, not recomputed; a re-sample's attention edit applies to the extra call as to its own;
    - the cosine per latent position over channels, then the mean over positions (the authors' code);
    - the model's raw output: eps for eps-prediction models, v for v-prediction ones (the authors'
      code takes the score difference's norm on SD 2);
    - the norm is the L2 norm (not memguard's per-element RMS): the weights are in the paper's units;
    - the score is the first step's whatever the decision step (a denoising-free metric).
    """

    norm_weight: float = 1.0
    cosine_weight: float = 2.0
    name: str = "anisotropy"
    needs: SignalNeeds = field(default=SignalNeeds(guidance_alignment_first_step=True))
    default_threshold: float | None = None  # no model-free guess: calibrate (memguard.calibrate)

    @property
    def score_range(self) -> tuple[float, float]:
        """A non-negative norm and a cosine in [-1, 1], weighted."""
        cos = abs(self.cosine_weight)
        if self.norm_weight > 0:
            return (-cos, math.inf)
        return (-cos, cos) if self.norm_weight == 0 else (-math.inf, cos)

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        entry = trace.steps.get(0)
        if upto_step < 1 or entry is None or entry.noise_norm is None or entry.guidance_alignment is None:
            return unavailable(trace)
        norm, alignment = entry.noise_norm.float(), entry.guidance_alignment.float()
        return (self.norm_weight * norm + self.cosine_weight * alignment).cpu()
