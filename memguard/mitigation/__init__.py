"""Mitigations applied when the guard re-samples a memorized image (one small class each).

To add one: a frozen dataclass with `name` and `apply(plan, context) -> ResamplePlan`, in
`strategies.py`; it must not touch the intended spans' tokens or embeddings.
"""

from .base import Compose, Escalate, Mitigation, MitigationContext, ResamplePlan, derive_seed, fresh_noise
from .edits import AttentionEdit, Edits, GuidanceEdit, RepulsionEdit
from .strategies import (
    AttentionRescale,
    ByIntent,
    Dissimilarity,
    GuidanceSchedule,
    InitialNoiseOptimization,
    KeepIntendedPrefix,
    PromptEmbeddingOptimization,
    RandomTokenAddition,
    ReSeed,
)

# Opposite guidance while t > 500: moves a re-sample that loses its prompt away from the
# begin-token-only image (itself a memorized one on the testbed). Shared by the two below.
_EARLY_OPPOSITE_PUSH = GuidanceSchedule(-2.0, 500.0)

# Hides the prompt's words: the early opposite push, then every word masked out of cross-attention.
# Every prompt gets the same picture.
PROMPT_MASKING: Mitigation = Compose((_EARLY_OPPOSITE_PUSH, AttentionRescale(1.25, scope="all")))

# The same early opposite push, then the prompt's own embeddings nudged until the first step no longer
# memorizes (Wen et al. 2024) instead of masked: re-samples of different prompts differ. Costs up to 20
# forward and backward UNet passes.
NUDGED_PROMPT: Mitigation = Compose((_EARLY_OPPOSITE_PUSH, PromptEmbeddingOptimization(scope="all", max_iterations=20)))

# The default re-sample strategy, chosen on the testbeds by benchmarks/mitigation.py (docs/benchmarks/intent.md).
# Unintended: keep the prompt and push the whole first estimate away from the flagged one; a prompt
# that a fresh start does not pin down (a template's layout in new colours), or a pipeline that starts
# from an image, gets the nudged prompt instead. Mixed: keep the prompt up to its concept.
DEFAULT_MITIGATION: Mitigation = ByIntent(
    unintended=Dissimilarity(layout_share=0.0, unpinned=NUDGED_PROMPT),
    mixed=KeepIntendedPrefix(),
)

__all__ = [
    "DEFAULT_MITIGATION",
    "NUDGED_PROMPT",
    "PROMPT_MASKING",
    "AttentionEdit",
    "AttentionRescale",
    "ByIntent",
    "Compose",
    "Dissimilarity",
    "Edits",
    "Escalate",
    "GuidanceEdit",
    "GuidanceSchedule",
    "InitialNoiseOptimization",
    "KeepIntendedPrefix",
    "Mitigation",
    "MitigationContext",
    "PromptEmbeddingOptimization",
    "RandomTokenAddition",
    "ReSeed",
    "RepulsionEdit",
    "ResamplePlan",
    "derive_seed",
    "fresh_noise",
]
