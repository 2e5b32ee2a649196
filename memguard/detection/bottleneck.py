"""memguard's own score: attention entropy at the UNet's bottleneck at the first step.

Why: at the lowest spatial resolution the UNet lays out the whole image. For a prompt it has not
memorized, those queries park most of their attention on the begin and padding tokens (a low
entropy over tokens); a memorized prompt is recalled through its words, and the bottleneck spreads
its attention over them (a high entropy). The signal is free (the taps read these layers anyway),
exists from the first step, and, unlike the noise magnitude, its benign distribution has no heavy
upper tail on the testbed. See benchmarks/detection.py for the ablation (every layer, the noise
magnitude, their combinations) behind this choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import entropy, score_fitted, unavailable


def bottleneck_layers(trace: SignalTrace) -> list[str]:
    """The recorded cross-attention layers at the lowest spatial resolution (fewest queries)."""
    if not trace.layer_queries:
        return []
    fewest = min(trace.layer_queries.values())
    return sorted(name for name, queries in trace.layer_queries.items() if queries == fewest)


@dataclass(frozen=True)
class BottleneckEntropyDetector:
    """Entropy of the attention mass over prompt tokens, averaged over the bottleneck's
    cross-attention layers, heads and queries and over the first k steps, divided by its maximum
    log(T) for T tokens: 0 (all on one token) to 1 (uniform). Needs a calibrated threshold."""

    name: str = "bottleneck_entropy"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, attention_by_layer=True))
    default_threshold: float | None = None  # no model-free guess: calibrate (memguard.calibrate)
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)  # a normalized entropy

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        layers = bottleneck_layers(trace)
        masses = [
            torch.stack([trace.steps[s].attention_by_layer[name] for name in layers]).mean(dim=0)
            for s in range(upto_step)
            if s in trace.steps and layers and all(name in trace.steps[s].attention_by_layer for name in layers)
        ]
        if not masses:
            return unavailable(trace)
        mass = torch.stack(masses).mean(dim=0)
        return (entropy(mass) / math.log(mass.shape[-1])).cpu()


def layer_step_means(
    trace: SignalTrace, upto_step: int, layers: list[str], field: str = "attention_by_layer"
) -> dict[str, torch.Tensor] | None:
    """Per layer: its entry in the steps' `field` (a per-layer dict of `StepSignals`), averaged over the
    first `upto_step` steps. None when a step or a layer was not recorded."""
    steps = [s for s in range(upto_step) if s in trace.steps]
    if not steps or not layers or not all(name in getattr(trace.steps[s], field) for s in steps for name in layers):
        return None
    return {name: torch.stack([getattr(trace.steps[s], field)[name] for s in steps]).mean(dim=0) for name in layers}


def layer_entropies(trace: SignalTrace, upto_step: int, layers: list[str]) -> dict[str, torch.Tensor] | None:
    """Per layer: the entropy of its attention mass over prompt tokens (averaged over the first
    `upto_step` steps), divided by log(T). None when a step or a layer was not recorded."""
    masses = layer_step_means(trace, upto_step, layers)
    if masses is None:
        return None
    return {name: (entropy(mass) / math.log(mass.shape[-1])).cpu() for name, mass in masses.items()}


@dataclass(frozen=True)
class StandardizedBottleneckEntropyDetector:
    """Each bottleneck layer's attention entropy, standardized by its mean and spread on the model's
    own benign (calibration) prompts, then averaged over the layers.

    Why: which bottleneck layer carries the memorization signal, and on what scale, differs between
    models (benchmarks/detector_transfer.py: the mid block on the shipped testbed, an up block on a
    retrain). Averaging raw attention follows whichever layer dominates; standardizing first gives each
    layer one vote on a common scale. A `FittableDetector`: `memguard.calibrate` fits the statistics
    on the benign prompts and stores them in the calibration (`detector_state`); it cannot score
    without them.
    """

    layer_stats: tuple[tuple[str, float, float], ...] = ()  # (layer, benign mean, benign std)
    name: str = "bottleneck_entropy_standardized"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, attention_by_layer=True))
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # standardized: any real

    def __post_init__(self) -> None:
        for layer, _, spread in self.layer_stats:
            if not spread > 0:
                raise ValueError(f"{self.name}: layer {layer!r} has a benign spread of {spread}; it must be > 0")

    @property
    def fitted(self) -> bool:
        return bool(self.layer_stats)

    # --- fitting (memguard.calibrate) -----------------------------------------------------------
    def features(self, trace: SignalTrace, upto_step: int) -> dict[str, torch.Tensor] | None:
        return layer_entropies(trace, upto_step, bottleneck_layers(trace))

    def fit(self, features: dict[str, torch.Tensor]) -> StandardizedBottleneckEntropyDetector:
        """The statistics of the benign prompts' per-layer entropies (float64)."""
        stats = {k: (float(v.double().mean()), float(v.double().std())) for k, v in sorted(features.items())}
        flat = sorted(k for k, (_, spread) in stats.items() if not spread > 0)
        if flat:
            raise ValueError(f"calibration: layer(s) {flat} score every benign prompt the same; pass varied prompts")
        return replace(self, layer_stats=tuple((k, m, s) for k, (m, s) in stats.items()))

    def state(self) -> dict:
        return {"layer_stats": {layer: [mean, spread] for layer, mean, spread in self.layer_stats}}

    def with_state(self, state: dict) -> StandardizedBottleneckEntropyDetector:
        stats = state.get("layer_stats") if isinstance(state, dict) else None
        if not isinstance(stats, dict) or not stats:
            raise ValueError(f"calibration of {self.name!r} holds no layer_stats; re-run memguard.calibrate")
        try:
            layers = tuple((str(k), float(m), float(s)) for k, (m, s) in stats.items())
        except (TypeError, ValueError):
            raise ValueError(f"calibration of {self.name!r}: layer_stats must map layers to [mean, std]") from None
        return replace(self, layer_stats=layers)

    def with_calibration(self, calibration) -> StandardizedBottleneckEntropyDetector:
        """This detector with the calibration's per-layer statistics."""
        return self.with_state(calibration.fitted_state or {})

    # --- scoring ------------------------------------------------------------------------------------
    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        return score_fitted(self, trace, upto_step, "per-layer statistics")

    def score_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        stats = {layer: (mean, spread) for layer, mean, spread in self.layer_stats}
        missing = sorted(set(features) - set(stats))
        if missing:
            raise ValueError(f"detector {self.name!r}: no calibration statistics for layer(s) {missing}")
        # in float64, as the fit computes them: a small benign spread magnifies rounding
        return torch.stack([(features[k].double() - stats[k][0]) / stats[k][1] for k in sorted(features)]).mean(dim=0)
