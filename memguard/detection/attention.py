"""Detectors on cross-attention over prompt tokens (Ren et al. 2024; Chen et al. 2025)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..signals import SignalNeeds, SignalTrace
from .base import entropy, unavailable


@dataclass(frozen=True)
class AttentionEntropyDetector:
    """Ren et al. 2024, "E": the entropy of the cross-attention distribution over prompt tokens in one
    layer at the first step. Memorized prompts spread attention over their trigger tokens instead of
    parking it on the begin token, so a higher entropy means more likely memorized.

    `layer`: a cross-attention layer name (e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2");
    None takes the first one in the UNet's order. Free: the taps read the attention anyway.
    """

    layer: str | None = None
    name: str = "ren_entropy"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, attention_by_layer=True))
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (0.0, math.inf)  # an entropy in nats, up to log(tokens)

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        entry = trace.steps.get(0)
        if entry is None or not entry.attention_by_layer:
            return unavailable(trace)
        layer = self.layer or min(entry.attention_by_layer, key=_layer_order)
        if layer not in entry.attention_by_layer:
            raise ValueError(f"AttentionEntropyDetector: layer {layer!r} was not recorded")
        return entropy(entry.attention_by_layer[layer]).cpu()


@dataclass(frozen=True)
class LateAttentionEntropyDetector:
    """Ren et al. 2024, "D": the mean attention entropy over the last `late_steps` steps plus how much
    the entropy over the summary tokens (the end token and the padding after it) changed between the
    first and the last step. Post hoc: needs the whole run.
    """

    late_steps: int = 5
    name: str = "ren_late_entropy"
    needs: SignalNeeds = field(default=SignalNeeds(attention=True, all_steps=True))
    default_threshold: float | None = None
    # an entropy plus a change of entropy, which may be negative
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        steps = [s for s in trace.recorded_steps() if trace.steps[s].attention_layers]
        if not steps or trace.end_token_index is None:
            return unavailable(trace)
        late = trace.token_mass(steps[-self.late_steps :])
        first, last = trace.token_mass(steps[:1]), trace.token_mass(steps[-1:])
        positions = torch.arange(first.shape[1])
        summary = positions[None, :] >= trace.end_token_index.cpu()[:, None]  # (N, T)
        change = _masked_entropy(last, summary) - _masked_entropy(first, summary)
        return entropy(late) + change


@dataclass(frozen=True)
class BrightEndingDetector:
    """Chen et al. 2025, "bright ending": at the last step, memorized images keep attending to the
    end token over the memorized region. That map (normalized to [0, 1]) masks the first step's
    noise difference, whose masked RMS is the score: Wen's magnitude, localized. Post hoc: full run.
    """

    name: str = "bright_ending"
    needs: SignalNeeds = field(
        default=SignalNeeds(attention=True, noise_map_first_step=True, end_token_map_last_step=True)
    )
    default_threshold: float | None = None
    score_range: ClassVar[tuple[float, float]] = (0.0, math.inf)  # a masked RMS

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        first = trace.steps.get(0)
        last_step = max((s for s in trace.steps if trace.steps[s].end_token_map_layers), default=None)
        if first is None or first.noise_map is None or last_step is None:
            return unavailable(trace)
        last = trace.steps[last_step]
        mask = last.end_token_map_sum / last.end_token_map_layers  # (N, H, W)
        mask = mask / mask.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        diff = first.noise_map.float()  # (N, C, H, W)
        masked = (diff * mask[:, None]).flatten(1).norm(dim=1)
        area = mask.flatten(1).sum(dim=1) * diff.shape[1]
        return (masked / area.clamp_min(1e-12).sqrt()).cpu()


def _masked_entropy(mass: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    kept = torch.where(mask, mass, torch.zeros_like(mass))
    rows = kept.sum(dim=1)
    values = entropy(kept)  # masked positions get entropy's 1e-12 floor: negligible
    return torch.where(rows > 0, values, torch.full_like(values, math.nan))


def _layer_order(name: str) -> tuple:
    # the UNet's forward order: down, mid, up blocks, then the numbers inside the name
    block = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}.get(name.split(".")[0], 3)
    return (block, [int(p) for p in name.split(".") if p.isdigit()])
