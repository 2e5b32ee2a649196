"""What a guarded call returns: the parent pipeline's output class plus one report per image."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput

from ..report import MemorizationReport


@dataclass
class GuardedPipelineOutput(StableDiffusionPipelineOutput):
    """`StableDiffusionPipelineOutput` (`images`, `nsfw_content_detected`) plus `memorization`: one
    `MemorizationReport` per image, in image order."""

    memorization: list[MemorizationReport] = field(default_factory=list)


@dataclass
class GuardedStableDiffusionXLPipelineOutput(StableDiffusionXLPipelineOutput):
    """`StableDiffusionXLPipelineOutput` (`images`) plus `memorization`: one report per image."""

    memorization: list[MemorizationReport] = field(default_factory=list)


def parent_fields(output_class: type) -> list[str]:
    """The parent output's fields, in order: what the parent returns as a tuple (`return_dict=False`)."""
    return [f.name for f in fields(output_class) if f.name != "memorization"]
