"""`GuardedStableDiffusionPipeline`: diffusers' `StableDiffusionPipeline` with a memorization guard."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from .. import logging_privacy
from ..config import GuardConfig, coerce_config
from ..report import GuardedPipelineOutput, MemorizationReport
from .guarded_call import GuardedCall, bind_call_arguments

logging_privacy.install()


class GuardedStableDiffusionPipeline(StableDiffusionPipeline):
    """A drop-in `StableDiffusionPipeline` whose calls are watched for memorization.

    Calling it takes every argument of `StableDiffusionPipeline.__call__` and returns a
    `GuardedPipelineOutput` (`images`, `nsfw_content_detected`, `memorization`: one
    `MemorizationReport` per image, in image order); with `return_dict=False`, the tuple
    `(images, nsfw_content_detected, memorization)`.

    Build one with `from_pretrained(..., guard=GuardConfig(...))`, or wrap an existing pipeline
    object, sharing its modules, with `from_pipe(pipe, guard=...)` or `memguard.guard(pipe)`.
    """

    @property
    def guard_config(self) -> GuardConfig:
        return self.__dict__.get("_guard_config") or GuardConfig()

    @guard_config.setter
    def guard_config(self, config: GuardConfig | None) -> None:
        self.__dict__["_guard_config"] = coerce_config(config)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, guard: GuardConfig | None = None, **kwargs
    ) -> GuardedStableDiffusionPipeline:
        config = coerce_config(guard)  # fail on a bad config before loading any weights
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        pipe.guard_config = config
        return pipe

    @classmethod
    def from_pipe(cls, pipeline, *, guard: GuardConfig | None = None, **kwargs) -> GuardedStableDiffusionPipeline:
        """Wrap `pipeline` (a `StableDiffusionPipeline`), sharing its modules: no weights are copied."""
        _check_supported(pipeline)
        if guard is None and isinstance(pipeline, GuardedStableDiffusionPipeline):
            guard = pipeline.guard_config
        config = coerce_config(guard)
        pipe = super().from_pipe(pipeline, **kwargs)
        pipe.guard_config = config
        return pipe

    def __call__(self, *args, **kwargs) -> GuardedPipelineOutput | tuple:
        arguments = bind_call_arguments(self, args, kwargs)
        return GuardedCall(self, self.guard_config, arguments).run(super().__call__)

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        *,
        config: GuardConfig | None = None,
        num_images_per_prompt: int = 1,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = True,
        **call_kwargs,
    ) -> list[MemorizationReport]:
        """Score prompts at the decision step without finishing the images (audits, calibration).

        Image j of prompt i uses a CPU generator seeded with `seed + i * num_images_per_prompt + j`, so
        scores do not depend on `batch_size`. Returns one report per image, prompt-major.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a sequence of prompt strings")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for name in ("prompt", "prompt_embeds", "generator", "output_type", "latents"):
            if name in call_kwargs:
                raise TypeError(f"score() sets {name!r} itself; do not pass it")
        config = config or self.guard_config
        if not config.enabled:
            raise ValueError("score() needs an enabled GuardConfig")
        reports: list[MemorizationReport] = []
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="memguard score", unit="batch", disable=not progress):
            batch = list(prompts[start : start + batch_size])
            first_image = start * num_images_per_prompt
            generators = [
                torch.Generator("cpu").manual_seed(seed + first_image + j)
                for j in range(len(batch) * num_images_per_prompt)
            ]
            arguments = bind_call_arguments(
                self,
                (),
                dict(
                    call_kwargs,
                    prompt=batch,
                    num_images_per_prompt=num_images_per_prompt,
                    generator=generators,
                    output_type="latent",
                ),
            )
            call = GuardedCall(self, config, arguments, stop_after_decision=True)
            with _progress_bar_disabled(self):
                output = call.run(super().__call__)
            reports.extend(output.memorization)
        return reports


class _progress_bar_disabled:
    """Silence diffusers' per-call progress bar inside a batched job (restored afterwards)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __enter__(self):
        self.saved = dict(getattr(self.pipe, "_progress_bar_config", {}))
        self.pipe.set_progress_bar_config(**{**self.saved, "disable": True})

    def __exit__(self, *exc):
        self.pipe._progress_bar_config = self.saved


def _check_supported(pipeline) -> None:
    if not isinstance(pipeline, StableDiffusionPipeline):
        raise TypeError(f"memguard guards StableDiffusionPipeline and its subclasses; got {type(pipeline).__name__}")


def guard(pipe: StableDiffusionPipeline, config: GuardConfig | None = None) -> GuardedStableDiffusionPipeline:
    """Wrap an existing pipeline object; the result shares its modules (the same `unet` object)."""
    return GuardedStableDiffusionPipeline.from_pipe(pipe, guard=config)
