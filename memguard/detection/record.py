"""Record one call's signals for any set of detectors, without a guard's decisions or actions.

Benchmarks use this to score the same generations with several detectors at once; the guarded
pipeline records through the same `SignalRecorder`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from ..signals import SignalNeeds, SignalRecorder, SignalTrace, UNetTap, cross_attention_layers
from ..signals.tokens import end_token_positions


@torch.no_grad()
def record_trace(
    pipe,
    prompts: Sequence[str],
    needs: SignalNeeds,
    *,
    upto_step: int,
    num_inference_steps: int = 50,
    generator: torch.Generator | list[torch.Generator] | None = None,
    num_images_per_prompt: int = 1,
    **call_kwargs,
) -> SignalTrace:
    """Run `pipe` (its plain diffusers loop) on `prompts` and return the signals `needs` asks for,
    stopping after `upto_step` steps unless a need requires the whole run."""
    recorder = SignalRecorder(
        pipe.unet,
        guidance_enabled=lambda: pipe.do_classifier_free_guidance,
        record_until_step=None if needs.all_steps else upto_step,
        attention_layers=frozenset(cross_attention_layers(pipe.unet)) if needs.attention else None,
        needs=needs,
        end_token_index=end_token_positions(pipe.tokenizer, prompts, num_images_per_prompt),
        last_step=num_inference_steps - 1,
        schedule=lambda: getattr(pipe.scheduler, "timesteps", None),
    )
    starts: list[torch.Tensor] = []

    def on_step_end(p, step_index, timestep, callback_kwargs):
        latents = callback_kwargs.get("latents")
        recorder.on_step_latents(step_index, latents, starts[0] if starts else None)
        recorder.step = step_index + 1
        recorder.continue_from(step_index + 1, latents)
        if not needs.full_run and step_index + 1 >= upto_step:
            p._interrupt = True  # diffusers' documented early exit from a step callback
        return callback_kwargs

    with UNetTap.recording(pipe.unet, recorder), _starting_latents(pipe, starts, needs.latent_updates):
        # the pipeline's own loop: a guarded pipeline's __call__ wraps its parent's, unwrapped here
        inspect.unwrap(type(pipe).__call__)(
            pipe,
            list(prompts),
            num_inference_steps=num_inference_steps,
            generator=generator,
            num_images_per_prompt=num_images_per_prompt,
            output_type="latent",
            callback_on_step_end=on_step_end,
            **call_kwargs,
        )
    return recorder.trace


@contextmanager
def _starting_latents(pipe, starts: list, wanted: bool):
    """While the loop runs, `starts` receives the starting latents the pipeline's `prepare_latents`
    returns (the first latent update needs them); the pipeline object is left as it was."""
    if not wanted:
        yield
        return
    prepare = pipe.prepare_latents

    def capture(*args, **kwargs):
        prepared = prepare(*args, **kwargs)
        starts.append(prepared[0] if isinstance(prepared, tuple) else prepared)  # inpainting returns a tuple
        return prepared

    own = pipe.__dict__.get("prepare_latents")  # an attribute of the object itself, if it had one
    pipe.__dict__["prepare_latents"] = capture  # this object only, not its class
    try:
        yield
    finally:
        if own is None:
            pipe.__dict__.pop("prepare_latents", None)
        else:
            pipe.__dict__["prepare_latents"] = own
