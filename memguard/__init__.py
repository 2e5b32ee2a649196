"""memguard: guard diffusers text-to-image pipelines against unintended memorization."""

from .calibration import Calibration, calibrate, model_fingerprint
from .config import GuardConfig
from .pipelines import GuardedStableDiffusionPipeline, guard
from .report import GuardedPipelineOutput, MemorizationReport

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "GuardConfig",
    "GuardedPipelineOutput",
    "GuardedStableDiffusionPipeline",
    "MemorizationReport",
    "calibrate",
    "guard",
    "model_fingerprint",
]
