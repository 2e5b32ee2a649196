"""memguard: guard diffusers text-to-image pipelines against unintended memorization."""

from .calibrating import calibrate
from .calibration import Calibration, model_fingerprint
from .config import GuardConfig
from .intent import IntendedConcept, IntentRegistry, RegistryError
from .pipelines import (
    GuardedPipelineOutput,
    GuardedStableDiffusionControlNetImg2ImgPipeline,
    GuardedStableDiffusionControlNetInpaintPipeline,
    GuardedStableDiffusionControlNetPipeline,
    GuardedStableDiffusionImg2ImgPipeline,
    GuardedStableDiffusionInpaintPipeline,
    GuardedStableDiffusionPipeline,
    GuardedStableDiffusionXLControlNetImg2ImgPipeline,
    GuardedStableDiffusionXLControlNetInpaintPipeline,
    GuardedStableDiffusionXLControlNetPipeline,
    GuardedStableDiffusionXLImg2ImgPipeline,
    GuardedStableDiffusionXLInpaintPipeline,
    GuardedStableDiffusionXLPipeline,
    GuardedStableDiffusionXLPipelineOutput,
    guard,
)
from .policy import Policy
from .prompts_corpus import benign_prompts
from .report import Attempt, MemorizationReport, Trigger

__version__ = "0.1.0"


def __getattr__(name: str):
    # `memguard.testbed` on first use, so `import memguard` stays free of the testbed's code and data
    if name == "testbed":
        import importlib

        return importlib.import_module(".testbed", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "testbed"])


__all__ = [
    "Attempt",
    "Calibration",
    "GuardConfig",
    "GuardedPipelineOutput",
    "GuardedStableDiffusionControlNetImg2ImgPipeline",
    "GuardedStableDiffusionControlNetInpaintPipeline",
    "GuardedStableDiffusionControlNetPipeline",
    "GuardedStableDiffusionImg2ImgPipeline",
    "GuardedStableDiffusionInpaintPipeline",
    "GuardedStableDiffusionPipeline",
    "GuardedStableDiffusionXLControlNetImg2ImgPipeline",
    "GuardedStableDiffusionXLControlNetInpaintPipeline",
    "GuardedStableDiffusionXLControlNetPipeline",
    "GuardedStableDiffusionXLImg2ImgPipeline",
    "GuardedStableDiffusionXLInpaintPipeline",
    "GuardedStableDiffusionXLPipeline",
    "GuardedStableDiffusionXLPipelineOutput",
    "IntendedConcept",
    "IntentRegistry",
    "MemorizationReport",
    "Policy",
    "RegistryError",
    "Trigger",
    "benign_prompts",
    "calibrate",
    "guard",
    "model_fingerprint",
]
