"""The guarded pipeline classes, one per family, and `guard()` that wraps an existing pipeline."""

from __future__ import annotations

import copy
import threading

from diffusers import (
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from ..config import GuardConfig
from ..errors import MemguardTypeError
from .families import (
    StableDiffusionControlNetFamily,
    StableDiffusionControlNetImg2ImgFamily,
    StableDiffusionControlNetInpaintFamily,
    StableDiffusionFamily,
    StableDiffusionImg2ImgFamily,
    StableDiffusionInpaintFamily,
    StableDiffusionXLControlNetFamily,
    StableDiffusionXLControlNetImg2ImgFamily,
    StableDiffusionXLControlNetInpaintFamily,
    StableDiffusionXLFamily,
    StableDiffusionXLImg2ImgFamily,
    StableDiffusionXLInpaintFamily,
    family_for,
)
from .mixin import GuardedPipelineMixin


class GuardedStableDiffusionPipeline(GuardedPipelineMixin, StableDiffusionPipeline):
    """`StableDiffusionPipeline` (SD 1.x and 2.x) under the memorization guard."""

    family = StableDiffusionFamily()


class GuardedStableDiffusionImg2ImgPipeline(GuardedPipelineMixin, StableDiffusionImg2ImgPipeline):
    """`StableDiffusionImg2ImgPipeline` under the memorization guard."""

    family = StableDiffusionImg2ImgFamily()


class GuardedStableDiffusionInpaintPipeline(GuardedPipelineMixin, StableDiffusionInpaintPipeline):
    """`StableDiffusionInpaintPipeline` under the memorization guard."""

    family = StableDiffusionInpaintFamily()


class GuardedStableDiffusionControlNetPipeline(GuardedPipelineMixin, StableDiffusionControlNetPipeline):
    """`StableDiffusionControlNetPipeline` under the memorization guard."""

    family = StableDiffusionControlNetFamily()


class GuardedStableDiffusionXLPipeline(GuardedPipelineMixin, StableDiffusionXLPipeline):
    """`StableDiffusionXLPipeline` under the memorization guard."""

    family = StableDiffusionXLFamily()


class GuardedStableDiffusionXLImg2ImgPipeline(GuardedPipelineMixin, StableDiffusionXLImg2ImgPipeline):
    """`StableDiffusionXLImg2ImgPipeline` (the refiner too) under the memorization guard."""

    family = StableDiffusionXLImg2ImgFamily()


class GuardedStableDiffusionXLInpaintPipeline(GuardedPipelineMixin, StableDiffusionXLInpaintPipeline):
    """`StableDiffusionXLInpaintPipeline` under the memorization guard."""

    family = StableDiffusionXLInpaintFamily()


class GuardedStableDiffusionXLControlNetPipeline(GuardedPipelineMixin, StableDiffusionXLControlNetPipeline):
    """`StableDiffusionXLControlNetPipeline` under the memorization guard."""

    family = StableDiffusionXLControlNetFamily()


class GuardedStableDiffusionControlNetImg2ImgPipeline(GuardedPipelineMixin, StableDiffusionControlNetImg2ImgPipeline):
    """`StableDiffusionControlNetImg2ImgPipeline` under the memorization guard."""

    family = StableDiffusionControlNetImg2ImgFamily()


class GuardedStableDiffusionControlNetInpaintPipeline(GuardedPipelineMixin, StableDiffusionControlNetInpaintPipeline):
    """`StableDiffusionControlNetInpaintPipeline` under the memorization guard."""

    family = StableDiffusionControlNetInpaintFamily()


class GuardedStableDiffusionXLControlNetImg2ImgPipeline(
    GuardedPipelineMixin, StableDiffusionXLControlNetImg2ImgPipeline
):
    """`StableDiffusionXLControlNetImg2ImgPipeline` under the memorization guard."""

    family = StableDiffusionXLControlNetImg2ImgFamily()


class GuardedStableDiffusionXLControlNetInpaintPipeline(
    GuardedPipelineMixin, StableDiffusionXLControlNetInpaintPipeline
):
    """`StableDiffusionXLControlNetInpaintPipeline` under the memorization guard."""

    family = StableDiffusionXLControlNetInpaintFamily()


GUARDED_CLASSES: tuple[type, ...] = (
    GuardedStableDiffusionPipeline,
    GuardedStableDiffusionImg2ImgPipeline,
    GuardedStableDiffusionInpaintPipeline,
    GuardedStableDiffusionControlNetPipeline,
    GuardedStableDiffusionControlNetImg2ImgPipeline,
    GuardedStableDiffusionControlNetInpaintPipeline,
    GuardedStableDiffusionXLPipeline,
    GuardedStableDiffusionXLImg2ImgPipeline,
    GuardedStableDiffusionXLInpaintPipeline,
    GuardedStableDiffusionXLControlNetPipeline,
    GuardedStableDiffusionXLControlNetImg2ImgPipeline,
    GuardedStableDiffusionXLControlNetInpaintPipeline,
)
_BY_PARENT: dict[type, type] = {cls.family.parent: cls for cls in GUARDED_CLASSES}
_lock = threading.Lock()


def guarded_class_for(pipeline_class: type) -> type:
    """The guarded class of a diffusers pipeline class. A subclass of a supported pipeline (your own
    pipeline class) gets a guarded subclass of its own, so its overrides stay in force. TypeError
    names the supported pipelines when there is none."""
    if issubclass(pipeline_class, GuardedPipelineMixin):
        return pipeline_class
    family = family_for(pipeline_class)  # TypeError for an unsupported class
    with _lock:
        cls = _BY_PARENT.get(pipeline_class)
        if cls is None:
            cls = _BY_PARENT[pipeline_class] = type(
                f"Guarded{pipeline_class.__name__}",
                (GuardedPipelineMixin, pipeline_class),
                {"family": family, "__module__": __name__},
            )
        return cls


def guard(pipe, config: GuardConfig | None = None):
    """Wrap an existing pipeline object of any supported family in its guarded class.

    The result shares `pipe`'s modules (the same `unet` object, no weight copies, no dtype change)
    and gets its own copies of what holds per-call state: the scheduler (its steps) and the
    tokenizers (a fast tokenizer keeps its padding and truncation settings between calls, so two
    threads tokenizing with one would get each other's). Serve threads with one wrapper each. A
    guarded `pipe` keeps its config unless `config` is given.
    """
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline):
        raise MemguardTypeError(f"memguard.guard takes a diffusers pipeline object, got {type(pipe).__name__}")
    cls = guarded_class_for(type(pipe))
    own = {"scheduler": type(pipe.scheduler).from_config(pipe.scheduler.config)}
    for name in ("tokenizer", "tokenizer_2"):
        if getattr(pipe, name, None) is not None:
            own[name] = copy.deepcopy(getattr(pipe, name))
    return cls.from_pipe(pipe, guard=config, **own)
