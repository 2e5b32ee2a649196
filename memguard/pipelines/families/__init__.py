"""The pipeline families memguard guards, one `Family` each (see `base.py` for what a family holds)."""

from __future__ import annotations

from ...errors import MemguardTypeError, MemguardValueError
from .base import Family, PromptText, TextConditioning, select_prompt
from .stable_diffusion import (
    StableDiffusionControlNetFamily,
    StableDiffusionControlNetImg2ImgFamily,
    StableDiffusionControlNetInpaintFamily,
    StableDiffusionFamily,
    StableDiffusionImg2ImgFamily,
    StableDiffusionInpaintFamily,
)
from .stable_diffusion_xl import (
    StableDiffusionXLControlNetFamily,
    StableDiffusionXLControlNetImg2ImgFamily,
    StableDiffusionXLControlNetInpaintFamily,
    StableDiffusionXLFamily,
    StableDiffusionXLImg2ImgFamily,
    StableDiffusionXLInpaintFamily,
)

FAMILIES: tuple[Family, ...] = (
    StableDiffusionFamily(),
    StableDiffusionImg2ImgFamily(),
    StableDiffusionInpaintFamily(),
    StableDiffusionControlNetFamily(),
    StableDiffusionControlNetImg2ImgFamily(),
    StableDiffusionControlNetInpaintFamily(),
    StableDiffusionXLFamily(),
    StableDiffusionXLImg2ImgFamily(),
    StableDiffusionXLInpaintFamily(),
    StableDiffusionXLControlNetFamily(),
    StableDiffusionXLControlNetImg2ImgFamily(),
    StableDiffusionXLControlNetInpaintFamily(),
)
_BY_PARENT = {family.parent: family for family in FAMILIES}
_BY_NAME = {family.name: family for family in FAMILIES}


def supported_pipelines() -> str:
    return ", ".join(family.parent.__name__ for family in FAMILIES)


def family_for(pipeline_class: type) -> Family:
    """The family of a diffusers pipeline class (or of a subclass of one); TypeError if none."""
    for cls in pipeline_class.__mro__:
        if cls in _BY_PARENT:
            return _BY_PARENT[cls]
    raise MemguardTypeError(
        f"memguard has no guard for {pipeline_class.__name__}; it guards {supported_pipelines()} (and their subclasses)"
    )


def family_named(name: str) -> Family:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise MemguardValueError(f"unknown pipeline family {name!r}; known: {', '.join(_BY_NAME)}") from None


__all__ = [
    "FAMILIES",
    "Family",
    "PromptText",
    "TextConditioning",
    "family_for",
    "family_named",
    "select_prompt",
    "supported_pipelines",
]
