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
from dataclasses import dataclass, field

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import entropy, unavailable


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
