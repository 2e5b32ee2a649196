"""Guarded drop-ins of diffusers pipelines: one class per family, `guard()` for existing objects."""

from . import from_pipe  # noqa: F401  (registers the routing of diffusers' from_pipe, run on first use)
from .families import FAMILIES, Family, family_for
from .guarded import (
    GUARDED_CLASSES,
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
    guard,
    guarded_class_for,
)
from .mixin import GuardedPipelineMixin
from .outputs import GuardedPipelineOutput, GuardedStableDiffusionXLPipelineOutput

__all__ = [
    "FAMILIES",
    "GUARDED_CLASSES",
    "Family",
    "GuardedPipelineMixin",
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
    "family_for",
    "guard",
    "guarded_class_for",
]
