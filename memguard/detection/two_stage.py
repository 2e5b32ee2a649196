"""memguard's score for both kinds of memorized caption: attention at step 1, or the latent updates to step k.

Why: two kinds of memorized caption show at different times. A caption that means little to the
model besides its image (a title, a product listing, a fixed template) is recalled through its
words from the first step: the top layers' attention entropy (top_layers.py) sees it there. A
caption in everyday words (a memorized "a large yellow circle at the top left on a blue
background") looks like any scene caption at step 1, to attention and to every first-step noise
signal; it locks its image in over the next few steps, and the size of those steps' latent updates
(Huang et al.'s signal, trajectory.py) sees it then. Neither signal catches the other kind at the
same benign false-positive rate (docs/testbed.md, "Memorized ordinary captions").

How: the attention score is `TopLayerEntropyDetector` on the first `attention_steps` steps; the
update score is log RMS(x_{t-1} - x_t) averaged over steps 1..k (k: the decision step). Each is put
on the scale of its own benign upper tail, (value - median) / (99th percentile - median), measured on
the calibration's benign prompts, and the score is the larger of the two: one threshold on it is one
threshold per signal at the same tail level, so each signal spends about half the false-positive
budget (both spend it together where they agree). All statistics come from `memguard.calibrate` and
are stored in the calibration. Decides at step `decision_step` (8) by default: the guard watches 8
steps before it acts, where the attention-only default decides at step 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import score_fitted, stored_stats, unavailable
from .top_layers import TopLayerEntropyDetector
from .trajectory import LatentUpdateDetector

UPDATES = "latent_update_rms"  # the feature name of log(latent-update RMS)
TAIL_QUANTILE = 0.99  # where each signal's benign upper tail is measured
DEFAULT_DECISION_STEP = 8  # steps 1-8 of 50: where memorized everyday captions have locked in


def tail_scale(values: torch.Tensor, what: str) -> tuple[float, float]:
    """(median, 99th percentile - median) of a signal over the benign calibration images, in float64;
    refuses a signal whose upper tail has no width (nothing to put on a common scale)."""
    values = values.double()
    median = float(values.median())
    width = float(torch.quantile(values, TAIL_QUANTILE)) - median
    if not width > 0 or not math.isfinite(median):
        raise ValueError(f"calibration: {what} has no benign upper tail to scale by; pass varied prompts")
    return median, width


@dataclass(frozen=True)
class AttentionOrUpdatesDetector:
    """The larger of two tail-scaled scores: the top layers' attention entropy over the first
    `attention_steps` steps, and log latent-update RMS over the first k steps (a `FittableDetector`:
    `memguard.calibrate` fits both and the calibration stores them)."""

    attention: TopLayerEntropyDetector = field(default_factory=TopLayerEntropyDetector)
    attention_tail: tuple[float, float] | None = None  # benign (median, q99 - median) of the attention score
    updates_tail: tuple[float, float] | None = None  # benign (median, q99 - median) of log update RMS
    attention_steps: int = 1
    decision_step: int = DEFAULT_DECISION_STEP  # what memguard.calibrate decides at unless told
    name: str = "attention_or_updates"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, attention_by_layer=True, latent_updates=True))
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # tail-scaled values

    def __post_init__(self) -> None:
        for name in ("attention_steps", "decision_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {name} must be an int >= 1, got {value!r}")

    @property
    def fitted(self) -> bool:
        return self.attention.fitted and self.attention_tail is not None and self.updates_tail is not None

    # --- fitting (memguard.calibrate) -----------------------------------------------------------
    def features(self, trace: SignalTrace, upto_step: int) -> dict[str, torch.Tensor] | None:
        layers = self.attention.features(trace, min(self.attention_steps, upto_step))
        updates = LatentUpdateDetector().score(trace, upto_step)
        if layers is None or not torch.isfinite(updates).all():
            return None
        return {**layers, UPDATES: updates.double().clamp_min(1e-12).log()}

    def fit(self, features: dict[str, torch.Tensor]) -> AttentionOrUpdatesDetector:
        layers = {k: v for k, v in features.items() if k != UPDATES}
        if UPDATES not in features or not layers:
            raise ValueError(f"calibration of {self.name!r}: the traces hold no attention or no latent updates")
        attention = self.attention.fit(layers)
        return replace(
            self,
            attention=attention,
            attention_tail=tail_scale(attention.score_features(layers), "the attention entropy"),
            updates_tail=tail_scale(features[UPDATES], "the latent-update size"),
        )

    def state(self) -> dict:
        return {
            "attention": self.attention.state(),
            "attention_tail": list(self.attention_tail or ()),
            "updates_tail": list(self.updates_tail or ()),
            "attention_steps": self.attention_steps,
        }

    def with_state(self, state: dict) -> AttentionOrUpdatesDetector:
        if not isinstance(state, dict):
            raise ValueError(f"calibration of {self.name!r} holds no statistics; re-run memguard.calibrate")
        steps = state.get("attention_steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"calibration of {self.name!r}: attention_steps must be an int >= 1, got {steps!r}")
        return replace(
            self,
            attention=self.attention.with_state(state.get("attention")),
            attention_tail=stored_stats(state.get("attention_tail"), f"calibration of {self.name!r}: attention_tail"),
            updates_tail=stored_stats(state.get("updates_tail"), f"calibration of {self.name!r}: updates_tail"),
            attention_steps=steps,
        )

    # --- scoring ------------------------------------------------------------------------------------
    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        if upto_step < 1:
            return unavailable(trace)
        return score_fitted(self, trace, upto_step, "statistics")

    def parts(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two tail-scaled signals the score takes the larger of: (attention, latent updates)."""
        layers = {k: v for k, v in features.items() if k != UPDATES}
        (a_median, a_width), (u_median, u_width) = self.attention_tail, self.updates_tail
        attention = (self.attention.score_features(layers).double() - a_median) / a_width
        return attention, (features[UPDATES].double() - u_median) / u_width

    def score_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        attention, updates = self.parts(features)
        return torch.maximum(attention, updates)
