"""Mitigations applied when the guard re-samples a memorized image (one small class each).

To add one: a frozen dataclass with `name` and `apply(plan, context) -> ResamplePlan`, in
`strategies.py`; it must not touch the intended spans' tokens or embeddings.
"""

from .base import Compose, Mitigation, MitigationContext, ResamplePlan, derive_seed
from .edits import AttentionEdit, Edits, GuidanceEdit
from .strategies import (
    AttentionRescale,
    GuidanceSchedule,
    InitialNoiseOptimization,
    PromptEmbeddingOptimization,
    RandomTokenAddition,
    ReSeed,
)

# The default re-sample strategy: see benchmarks/mitigation.py and the README for the measurement.
DEFAULT_MITIGATION: Mitigation = Compose((ReSeed(), AttentionRescale(scope="all")))

__all__ = [
    "DEFAULT_MITIGATION",
    "AttentionEdit",
    "AttentionRescale",
    "Compose",
    "Edits",
    "GuidanceEdit",
    "GuidanceSchedule",
    "InitialNoiseOptimization",
    "Mitigation",
    "MitigationContext",
    "PromptEmbeddingOptimization",
    "RandomTokenAddition",
    "ReSeed",
    "ResamplePlan",
    "derive_seed",
]
