"""diffusers' `from_pipe` on a guarded pipeline keeps the guard, or refuses.

`StableDiffusionImg2ImgPipeline.from_pipe(guarded)` and `AutoPipelineForImage2Image.from_pipe(guarded)`
build the target class from the source's modules; left alone they return an unguarded pipeline, and
nothing tells the caller that the guard is gone. Once a guarded pipeline exists (never merely on
`import memguard`), these class methods are routed: for a guarded source they return the target's
guarded class, with the source's config, or raise a TypeError when memguard has no guard for the
target; for any other source they run unchanged.
"""

from __future__ import annotations

import copy
import threading

from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)

from ..errors import MemguardTypeError
from .guarded import guarded_class_for
from .mixin import GuardedPipelineMixin, before_first_construction

_lock = threading.Lock()
_originals: dict[type, object] = {}


def route_from_pipe() -> None:
    """Route `DiffusionPipeline.from_pipe` and the AutoPipelines' `from_pipe` (once, idempotent)."""
    if _originals:
        return
    with _lock:
        if _originals:
            return
        _originals[DiffusionPipeline] = DiffusionPipeline.__dict__["from_pipe"]
        DiffusionPipeline.from_pipe = classmethod(_pipeline_from_pipe)
        for auto in (AutoPipelineForText2Image, AutoPipelineForImage2Image, AutoPipelineForInpainting):
            _originals[auto] = auto.__dict__["from_pipe"]
            auto.from_pipe = classmethod(_auto_from_pipe)


def _is_guarded(pipeline) -> bool:
    return isinstance(pipeline, GuardedPipelineMixin)


def _pipeline_from_pipe(cls, pipeline, **kwargs):
    original = _originals[DiffusionPipeline].__func__
    if not _is_guarded(pipeline) or _is_guarded_class(cls):
        return original(cls, pipeline, **kwargs)
    try:
        target = guarded_class_for(cls)
    except TypeError as error:
        raise MemguardTypeError(
            f"{cls.__name__}.from_pipe(...) on a guarded pipeline would drop its memorization guard: {error}. "
            f"To build an unguarded {cls.__name__} deliberately, pass the original, unguarded pipeline"
        ) from None
    return target.from_pipe(pipeline, **kwargs)


def _auto_from_pipe(cls, pipeline, **kwargs):
    original = _originals[cls].__func__
    if not _is_guarded(pipeline):
        return original(cls, pipeline, **kwargs)
    # The AutoPipelines pick the target by the source's class name, which only diffusers' own classes
    # have: let them pick it on a plain view of the source (the same modules and config), then guard it.
    view = copy.copy(pipeline)
    view.__class__ = pipeline.family.parent
    plain = original(cls, view, **kwargs)
    try:
        target = guarded_class_for(type(plain))
    except TypeError as error:
        raise MemguardTypeError(
            f"{cls.__name__}.from_pipe(...) on a guarded pipeline would drop its memorization guard: {error}"
        ) from None
    return target.from_pipe(plain, guard=pipeline.guard_config)


def _is_guarded_class(cls) -> bool:
    return issubclass(cls, GuardedPipelineMixin)


before_first_construction.append(route_from_pipe)
