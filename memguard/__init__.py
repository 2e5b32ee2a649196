"""memguard: guard diffusers text-to-image pipelines against unintended memorization."""

from .calibration import Calibration, calibrate, model_fingerprint
from .config import GuardConfig
from .intent import IntendedConcept, IntentRegistry, RegistryError
from .pipelines import GuardedStableDiffusionPipeline, guard
from .policy import Policy
from .report import Attempt, GuardedPipelineOutput, MemorizationReport, Trigger

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "Calibration",
    "GuardConfig",
    "GuardedPipelineOutput",
    "GuardedStableDiffusionPipeline",
    "IntendedConcept",
    "IntentRegistry",
    "MemorizationReport",
    "Policy",
    "RegistryError",
    "Trigger",
    "calibrate",
    "guard",
    "model_fingerprint",
]
