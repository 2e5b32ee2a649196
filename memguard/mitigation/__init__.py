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

# The default re-sample strategy, chosen on the testbed by benchmarks/mitigation.py (README, "Mitigation").
# Unintended: opposite guidance early, then the prompt's words masked out of cross-attention. Masking
# alone sends every prompt to the same begin-token-only image (itself a memorized one on the testbed);
# the early opposite push keeps re-samples away from it. Mixed: keep the prompt up to its concept.
DEFAULT_MITIGATION: Mitigation = ByIntent(
    unintended=Compose((GuidanceSchedule(-2.0, 500.0), AttentionRescale(1.25, scope="all"))),
    mixed=KeepIntendedPrefix(),
)

__all__ = [
    "DEFAULT_MITIGATION",
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
