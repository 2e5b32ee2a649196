"""Detectors on the denoising trajectory: the latents the loop steps through."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import steps_upto, unavailable


@dataclass(frozen=True)
class LatentUpdateDetector:
    """Huang et al. 2026, "Broken Memories" (KDD; arXiv 2605.22050): memorization makes the sampler
    numerically unstable, and the early latent updates leave the "empirical stability region" that
    benign generations stay in. The score is the size of each step's latent update,

        RMS(x_{t-1} - x_t), averaged over the first k steps (k: the decision step),

    where x_T is the loop's starting latents and x_{t-1} the latents a step ends with, as the step
    callback sees them (after an inpainting pipeline's blending; what a user's callback returned is
    where the next update starts). Free: no UNet call; the guard keeps one float32 copy of the latents
    while steps are recorded.

    What we chose where the paper leaves it open or memguard differs:
    - the RMS per latent element rather than the L2 norm: the same ranking at one resolution, and a
      score that does not grow with the resolution (as memguard's `noise_rms`);
    - one calibrated threshold on the mean over the first k steps stands for the paper's per-step
      stability bands fitted on benign generations; at k = 1 the two coincide (the band's upper edge
      is the threshold);
    - one-sided: a larger update is more likely memorized (instability), a smaller one never flagged;
    - the intent check's residual score (the prompt with its intended mentions replaced) needs the
      loop's own steps: the guard rolls that text out through the decision step on a copy of the
      scheduler (`memguard.signals.rollout`), not one UNet evaluation as for a first-step score.
    """

    name: str = "broken_memories"
    needs: SignalNeeds = field(default=SignalNeeds(latent_updates=True))
    default_threshold: float | None = None  # no model-free guess: calibrate (memguard.calibrate)
    score_range: ClassVar[tuple[float, float]] = (0.0, math.inf)  # an RMS

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        steps = steps_upto(trace, upto_step, "latent_update_rms")
        if not steps or steps != list(range(len(steps))):
            return unavailable(trace)  # the first update (from x_T) or one between was not read: no partial mean
        return torch.stack([trace.steps[s].latent_update_rms.float() for s in steps]).mean(dim=0).cpu()
