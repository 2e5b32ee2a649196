"""A calibrated score of memguard's: attention entropy of every cross-attention layer plus the noise magnitude.

Why two signals: both are free under classifier-free guidance (the taps read every layer's attention,
the CFG batch gives eps(x_t, prompt) - eps(x_t, "")), and they fail differently. A memorized prompt is
recalled through its words, so attention spreads over them (a high entropy over tokens) at every
resolution, not only at the bottleneck; a caption embedded in a longer sentence or led by "a photo
of" dilutes that spread a little, while the text-conditional noise magnitude still stands out. The
magnitude alone has a heavy benign upper tail (fully specified benign prompts also pull hard); the
entropy alone misses some reworded copies. Summed on a common scale they cover each other.

How: each layer's entropy (normalized by log T) is standardized by its mean and spread on the
model's own benign calibration prompts, and the layers' standardized values are averaged: one vote
per layer, whatever layer carries the signal on a given model (benchmarks/detector_transfer.py found
it moves between retrains). That average and log(noise RMS) are each standardized again on the same
benign prompts, and the score is their sum. All statistics come from `memguard.calibrate` and are
stored in the calibration; benchmarks/detection.py has the ablation (each layer, the bottleneck alone,
either signal alone, max instead of sum). Not the default (registry.CALIBRATED_DEFAULT): on the shipped
SD testbed its 1,000-score calibration sits above two template items that the bottleneck entropy
catches (docs/benchmarks/perturbations.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import (
    LayerStats,
    benign_stats,
    fit_layer_stats,
    mean_over_steps,
    read_layer_stats,
    score_fitted,
    standardize_layers,
    stored_stats,
)
from .bottleneck import layer_entropies

NOISE = "noise_rms"  # the feature name of log(noise RMS)


@dataclass(frozen=True)
class AttentionNoiseDetector:
    """Standardized mean attention entropy over every cross-attention layer, plus standardized
    log noise RMS, both averaged over the first k steps; fitted on benign prompts (a
    `FittableDetector`: `memguard.calibrate` fits it and the calibration stores the statistics)."""

    layer_stats: LayerStats = ()  # (layer, benign mean, benign std) of entropy
    attention_stats: tuple[float, float] | None = None  # benign (mean, std) of the layers' mean z
    noise_stats: tuple[float, float] | None = None  # benign (mean, std) of log(noise RMS)
    name: str = "attention_noise"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, attention_by_layer=True, noise=True))
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # a sum of z-scores

    @property
    def fitted(self) -> bool:
        return bool(self.layer_stats) and self.attention_stats is not None and self.noise_stats is not None

    # --- fitting (memguard.calibrate) -----------------------------------------------------------
    def features(self, trace: SignalTrace, upto_step: int) -> dict[str, torch.Tensor] | None:
        entropies = layer_entropies(trace, upto_step, sorted(trace.layer_queries))
        noise = mean_over_steps(trace, upto_step, "noise_rms")
        if entropies is None or noise is None:
            return None
        return {**entropies, NOISE: noise.double().clamp_min(1e-12).log().cpu()}

    def fit(self, features: dict[str, torch.Tensor]) -> AttentionNoiseDetector:
        layers = sorted(k for k in features if k != NOISE)
        if NOISE not in features or not layers:
            raise ValueError(f"calibration of {self.name!r}: the traces hold no attention or no noise magnitude")
        fitted = replace(self, layer_stats=fit_layer_stats(features, layers))
        attention = fitted._mean_z(features)
        return replace(
            fitted,
            attention_stats=benign_stats(attention, "the attention entropy"),
            noise_stats=benign_stats(features[NOISE], "the noise magnitude"),
        )

    def state(self) -> dict:
        return {
            "layer_stats": {layer: [mean, spread] for layer, mean, spread in self.layer_stats},
            "attention_stats": list(self.attention_stats or ()),
            "noise_stats": list(self.noise_stats or ()),
        }

    def with_state(self, state: dict) -> AttentionNoiseDetector:
        return replace(
            self,
            layer_stats=read_layer_stats(state, self.name),
            attention_stats=stored_stats(
                state.get("attention_stats"), f"calibration of {self.name!r}: attention_stats"
            ),
            noise_stats=stored_stats(state.get("noise_stats"), f"calibration of {self.name!r}: noise_stats"),
        )

    def with_calibration(self, calibration) -> AttentionNoiseDetector:
        """This detector with the calibration's statistics."""
        return self.with_state(calibration.fitted_state or {})

    # --- scoring ------------------------------------------------------------------------------------
    def _mean_z(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = {k: v for k, v in features.items() if k != NOISE}
        return standardize_layers(self.layer_stats, layers, self.name).mean(dim=0)

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        return score_fitted(self, trace, upto_step, "statistics")

    def parts(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two standardized signals the score adds: (attention entropy, log noise RMS)."""
        (attention_mean, attention_spread), (noise_mean, noise_spread) = self.attention_stats, self.noise_stats
        attention = (self._mean_z(features) - attention_mean) / attention_spread
        return attention, (features[NOISE].double() - noise_mean) / noise_spread

    def score_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        attention, noise = self.parts(features)
        return attention + noise
