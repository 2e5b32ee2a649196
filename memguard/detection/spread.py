"""How far the cross-attention spreads over the prompt, two ways per layer (`attention_spread`).

Why: a memorized prompt is recalled through all of its tokens, so the layers that carry the recall
spread their attention away from the begin token (top_layers.py). Two statistics of one layer's
attention probabilities see that spread differently: the entropy of the attention mass averaged over
the image (where the layer as a whole looks; top_layer_entropy's only statistic) and the mean entropy
of each query's own attention (how undecided each latent pixel is). Every layer gives both, each
standardized on the model's benign calibration prompts, and the score is the mean of the largest
quarter of those z-scores (at least three). Both come from the attention probabilities the taps
compute anyway: no UNet call is added.

Not the default. On both testbeds, each calibrated on its own 1,000 prompts, it catches more
reworded memorized captions than top_layer_entropy (SD testbed 0.945 against 0.911) and flags fewer
benign prompts in unseen long wordings (SDXL testbed 2.4% against 4.6%); but a prompt of one word or
none spreads its attention over the padding as a memorized one does, and the per-query entropy sees
that even more: on the SD testbed it flags every empty or punctuation-only prompt and about half of
the one-word ones (top_layer_entropy: a seventh and a quarter). Calibrated on a set that holds such
short prompts, as a real model's should, the two catch about as many copies. Measured in
benchmarks/perturbations.py, benchmarks/calibration.py and benchmarks/detection.py
(docs/benchmarks/perturbations.md). Calibrate it by name: `memguard.calibrate(pipe, prompts,
detector="attention_spread")`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..signals import SignalNeeds, SignalTrace
from .bottleneck import layer_entropies, layer_step_means
from .top_layers import TopLayerEntropyDetector

ENTROPY_PREFIX = "entropy:"  # the entropy of the layer's mean attention over tokens
QUERY_ENTROPY_PREFIX = "query_entropy:"  # the mean entropy of each query's attention over tokens


def layer_query_entropies(trace: SignalTrace, upto_step: int, layers: list[str]) -> dict[str, torch.Tensor] | None:
    """Per layer: the mean over heads and queries of each query's attention entropy over the prompt
    tokens (averaged over the first `upto_step` steps), divided by log(T). None when a step or a layer
    was not recorded."""
    per_query = layer_step_means(trace, upto_step, layers, "query_entropy_by_layer")
    if per_query is None:
        return None
    first = trace.steps[min(s for s in range(upto_step) if s in trace.steps)].attention_by_layer  # T per layer
    if not all(name in first for name in layers):
        return None
    return {name: (value / math.log(first[name].shape[-1])).cpu() for name, value in per_query.items()}


@dataclass(frozen=True)
class AttentionSpreadDetector(TopLayerEntropyDetector):
    """Mean of the `top_layers` largest standardized attention-spread features: for every cross-attention
    layer, the entropy of its mean attention over prompt tokens and the mean entropy of each query's
    attention, both divided by log T, averaged over the first k steps and standardized on benign
    prompts (`layer_stats` holds one entry per feature, named `entropy:<layer>` and
    `query_entropy:<layer>`; `top_layers` counts features). Fitted by `memguard.calibrate`; refuses to
    score without its statistics."""

    name: str = "attention_spread"
    needs: SignalNeeds = field(
        default=SignalNeeds(attention=True, attention_by_layer=True, attention_query_entropy=True)
    )

    def features(self, trace: SignalTrace, upto_step: int) -> dict[str, torch.Tensor] | None:
        layers = sorted(trace.layer_queries)
        spread = layer_entropies(trace, upto_step, layers)
        per_query = layer_query_entropies(trace, upto_step, layers)
        if spread is None or per_query is None:
            return None
        return {
            **{ENTROPY_PREFIX + name: value for name, value in spread.items()},
            **{QUERY_ENTROPY_PREFIX + name: value for name, value in per_query.items()},
        }
