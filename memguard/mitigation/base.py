"""The mitigation interface: a re-sample starts from a `ResamplePlan` that mitigations change.

A mitigation is a small class with a `name` and `apply(plan, context) -> plan`. None may alter the
tokens or the embeddings of intended spans: they only act on the starting noise, on the unintended
trigger tokens, on the guidance schedule, or on words added outside the intended spans.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from ..signals.replay import ImageInputs
from .edits import AttentionEdit, Edits, GuidanceEdit


@dataclass(frozen=True)
class MitigationContext:
    """What a mitigation may read about the image being re-sampled (batch of one)."""

    pipe: object
    unet: torch.nn.Module  # the pipeline's denoising network
    prompt: str | None  # None when the call passed prompt_embeds
    inputs: ImageInputs  # the first step's UNet inputs of this image (text states, extra conditioning)
    # (1, C, h, w) the first generation's starting noise (before init_noise_sigma); None where the
    # loop starts from an image with noise added (img2img, inpaint): the re-sample draws new noise
    latents: torch.Tensor | None
    input_scale: float  # the first UNet input is latents * input_scale
    guidance_scale: float
    threshold: float  # the guard's, in its detector's units
    noise_target: float | None  # a first-step noise RMS to get under: the threshold when the detector is
    # the noise magnitude itself; None otherwise (optimizations then use their whole iteration budget)
    intended_spans: tuple[tuple[int, int], ...]  # character ranges of allowed concepts
    intended_tokens: tuple[int, ...]  # text-encoder positions inside intended spans
    unintended_tokens: tuple[int, ...]  # positions of unintended trigger words
    other_tokens: tuple[int, ...]  # every prompt position outside intended spans (no special tokens)
    attempt: int  # 1-based re-sample number
    seed: int  # deterministic per (image, attempt)
    unintended_spans: tuple[tuple[int, int], ...] = ()  # character ranges of unintended trigger words

    @property
    def cond_embeds(self) -> torch.Tensor:
        """(1, T, D) the prompt's text-encoder states."""
        return self.inputs.cond_states

    @property
    def uncond_embeds(self) -> torch.Tensor | None:
        """(1, T, D) the negative / empty prompt's; None when guidance was off."""
        return self.inputs.uncond_states

    @property
    def first_timestep(self):
        return self.inputs.timestep


@dataclass(frozen=True)
class ResamplePlan:
    # where the attempt starts: the first generation's noise, fresh noise on a retry; None: the
    # pipeline draws it (families that start from an image)
    latents: torch.Tensor | None
    prompt: str | None
    prompt_embeds: torch.Tensor | None = None  # when set, replaces the prompt's embeddings
    # A text whose whole-prompt embedding (SDXL's pooled `text_embeds`) replaces the prompt's; None
    # keeps the prompt's. A mitigation that hides or changes words sets it, or the pooled embedding
    # would still carry them unchanged. Families without such an embedding ignore it.
    pooled_text: str | None = None
    edits: Edits = field(default_factory=Edits)
    rescored: bool = True  # False: the step-k score cannot see this mitigation's effect
    applied: tuple[str, ...] = ()

    def with_(self, name: str, **changes) -> ResamplePlan:
        return replace(self, applied=(*self.applied, name), **changes)


class Mitigation(Protocol):
    name: str

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan: ...


def fresh_noise(seed: int, like: torch.Tensor | None) -> torch.Tensor | None:
    """Gaussian noise shaped like `like` (a starting latent), drawn on the CPU so a seed gives the same
    noise on every device; None where there is no starting noise to replace."""
    if like is None:
        return None
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float32)
    return noise.to(like.device, like.dtype)


def derive_seed(latents: torch.Tensor, attempt: int) -> int:
    """A seed that depends only on the image's own first-generation noise and the attempt, so
    re-samples are reproducible without touching the caller's generator, and an image re-samples the
    same whether it was generated alone or in a batch (a served request batched with others)."""
    digest = hashlib.blake2b(latents.detach().float().cpu().numpy().tobytes()[:4096], digest_size=8)
    digest.update(f"{attempt}".encode())
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def require_mitigation(value: object, where: str) -> None:
    """Raise TypeError naming `where` unless `value` has a callable `apply(plan, context)` (an object:
    a mitigation class itself, whose `apply` is unbound, is no mitigation)."""
    if isinstance(value, type):
        raise TypeError(
            f"{where} must be a mitigation object, got the class {value.__name__}: call it, {value.__name__}()"
        )
    if not callable(getattr(value, "apply", None)):
        kind = type(value).__name__
        raise TypeError(f"{where} must be a mitigation (an object with apply(plan, context)), got a {kind}")


def _mitigations(owner: str, mitigations: Sequence[Mitigation]) -> tuple[Mitigation, ...]:
    """`mitigations` as a tuple, checked: at least one, each a mitigation (named by its place). Taken
    as a tuple first: a generator would be used up by the check."""
    mitigations = tuple(mitigations)
    if not mitigations:
        raise ValueError(f"{owner} needs at least one mitigation")
    for k, mitigation in enumerate(mitigations):
        require_mitigation(mitigation, f"{owner}.mitigations[{k}]")
    return mitigations


def require_number(value, where: str, *, low: float | None = None, above: float | None = None, whole: bool = False):
    """Raise naming `where` unless `value` is a finite number (a whole one when `whole`), >= `low`
    and > `above` where given: a mistyped setting is refused when the mitigation is built, not at the
    first re-sample (where the guard would block the image and keep only the error's type)."""
    kinds = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{where} must be {'a whole number' if whole else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(value) or (low is not None and value < low) or (above is not None and not value > above):
        bound = f" >= {low:g}" if low is not None else f" > {above:g}" if above is not None else ""
        raise ValueError(f"{where} must be a finite number{bound}, got {value!r}")


@dataclass(frozen=True)
class Compose:
    """Several mitigations applied in order on one re-sample."""

    mitigations: Sequence[Mitigation]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mitigations", _mitigations("Compose", self.mitigations))

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.mitigations)

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        for mitigation in self.mitigations:
            plan = mitigation.apply(plan, context)
        return plan


@dataclass(frozen=True)
class Escalate:
    """One mitigation per re-sample attempt: the first attempt applies the first, a retry (the
    re-sample still scored memorized, or copy verification found a copy) the next, and the last one
    every attempt after. So a re-sample that keeps the prompt can go first and one that removes more
    of it follow only where the first did not hold."""

    mitigations: Sequence[Mitigation]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mitigations", _mitigations("Escalate", self.mitigations))

    @property
    def name(self) -> str:
        return "escalate(" + ", ".join(m.name for m in self.mitigations) + ")"

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        chosen = self.mitigations[min(max(context.attempt, 1), len(self.mitigations)) - 1]
        return chosen.apply(plan, context)


__all__ = [
    "AttentionEdit",
    "Compose",
    "Escalate",
    "GuidanceEdit",
    "Mitigation",
    "MitigationContext",
    "ResamplePlan",
    "derive_seed",
]
