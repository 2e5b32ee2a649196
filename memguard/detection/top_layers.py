"""memguard's calibrated default: the attention entropy of the cross-attention layers that rise most.

Why: a memorized prompt is recalled through its words, so the layers that carry the recall spread
their attention over the prompt's tokens (a high entropy over tokens) where a benign prompt parks it
on the begin and padding tokens. Which layers carry it differs between models (two up-block layers
on the shipped SD testbed, a down-block and an up-block layer on the SDXL one), and the other layers
do not move or even move the other way. So each layer's entropy is standardized by its mean and
spread on the model's own benign calibration prompts, and the score is the mean of the few largest
standardized values (a quarter of the layers, at least three): whichever layers respond carry the
score, the rest cannot dilute it, and averaging a few keeps a benign outlier from raising the benign
tail. The benign prompts that score highest raise one or two layers sharply while memorized ones
raise most layers (on both testbeds), so three is the fewest that a two-layer benign spike cannot
carry alone. Measured in benchmarks/detection.py and
benchmarks/perturbations.py against the bottleneck's raw entropy (bottleneck.py), every layer's
mean and the maximum (docs/benchmarks/detection.md).

Both the statistics and the number of layers averaged come from `memguard.calibrate` and are stored
in the calibration, so a threshold is only ever compared with the score it was chosen on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import LayerStats, fit_layer_stats, read_layer_stats, score_fitted, standardize_layers
from .bottleneck import layer_entropies

DEFAULT_TOP_FRACTION = 0.25  # of the model's cross-attention layers
MIN_TOP_LAYERS = 3  # benign outliers spike one or two layers; three keep them from deciding


def top_layer_count(num_layers: int, fraction: float = DEFAULT_TOP_FRACTION) -> int:
    """How many of `num_layers` standardized layers the score averages: ceil(fraction * layers), at
    least `MIN_TOP_LAYERS`, at most all of them."""
    return min(num_layers, max(MIN_TOP_LAYERS, math.ceil(fraction * num_layers)))


@dataclass(frozen=True)
class TopLayerEntropyDetector:
    """Mean of the `top_layers` largest standardized per-layer attention entropies (each layer's
    entropy over prompt tokens, divided by log T, averaged over the first k steps, standardized on
    benign prompts). Fitted by `memguard.calibrate`; refuses to score without its statistics."""

    layer_stats: LayerStats = ()  # (layer, benign mean, benign std) of entropy
    top_layers: int = 0  # set by the fit from the model's layer count
    top_fraction: float = DEFAULT_TOP_FRACTION
    name: str = "top_layer_entropy"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, attention_by_layer=True))
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # a mean of z-scores

    def __post_init__(self) -> None:
        if isinstance(self.top_fraction, bool) or not 0 < self.top_fraction <= 1:
            raise ValueError(f"{self.name}: top_fraction must be in (0, 1], got {self.top_fraction!r}")

    @property
    def fitted(self) -> bool:
        return bool(self.layer_stats) and 0 < self.top_layers <= len(self.layer_stats)

    # --- fitting (memguard.calibrate) -----------------------------------------------------------
    def features(self, trace: SignalTrace, upto_step: int) -> dict[str, torch.Tensor] | None:
        return layer_entropies(trace, upto_step, sorted(trace.layer_queries))

    def fit(self, features: dict[str, torch.Tensor]) -> TopLayerEntropyDetector:
        layers = sorted(features)
        if not layers:
            raise ValueError(f"calibration of {self.name!r}: the traces hold no cross-attention layer")
        return replace(
            self,
            layer_stats=fit_layer_stats(features, layers),
            top_layers=top_layer_count(len(layers), self.top_fraction),
        )

    def state(self) -> dict:
        return {
            "layer_stats": {layer: [mean, spread] for layer, mean, spread in self.layer_stats},
            "top_layers": self.top_layers,
        }

    def with_state(self, state: dict) -> TopLayerEntropyDetector:
        layers = read_layer_stats(state, self.name)
        top = state.get("top_layers")
        if isinstance(top, bool) or not isinstance(top, int) or not 0 < top <= len(layers):
            raise ValueError(
                f"calibration of {self.name!r}: top_layers must be a whole number from 1 to {len(layers)}, got {top!r}"
            )
        return replace(self, layer_stats=layers, top_layers=top)

    def with_calibration(self, calibration) -> TopLayerEntropyDetector:
        """This detector with the calibration's statistics."""
        return self.with_state(calibration.fitted_state or {})

    # --- scoring ------------------------------------------------------------------------------------
    def standardized(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(layers, N) each layer's entropy as a z-score against the benign prompts, layers sorted by name."""
        return standardize_layers(self.layer_stats, features, self.name)

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        return score_fitted(self, trace, upto_step, "per-layer statistics")

    def score_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.standardized(features).topk(self.top_layers, dim=0).values.mean(dim=0)
