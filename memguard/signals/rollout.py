"""The first denoising steps run again on other text: signals of the loop's own steps for a prompt the
loop did not run.

A detector that reads the loop's trajectory (the latent-update size over steps 1..k) cannot score a
changed prompt from one UNet evaluation, as the attention and noise scores can. The guard's intent
check needs exactly that: the prompt with its intended mentions replaced by stand-ins. `roll_out`
steps a private copy of the pipeline's scheduler, taken as the loop began, from fresh starting
noises through the loop's first k timesteps with classifier-free guidance, replaying the first step's
UNet inputs with new text, and records what a `SignalRecorder` would have recorded in the loop.

What it leaves out, said here because it differs from the loop: a ControlNet's first-step residuals
are reused at every step (not recomputed), `guidance_rescale` is not applied, and a 4-channel
inpainting pipeline's per-step blending with the masked image is skipped.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping

import torch

from .recorder import SignalRecorder
from .replay import ImageInputs


def loop_timesteps(scheduler, first_timestep, steps: int) -> list:
    """The `steps` timesteps the loop visits first: the scheduler's schedule from the first step's
    timestep on (img2img and SDXL's denoising_start begin part-way). Empty when the first step's
    timestep is not in the schedule."""
    schedule = getattr(scheduler, "timesteps", None)
    if schedule is None or len(schedule) == 0:
        return []
    first = first_timestep.reshape(-1)[0] if isinstance(first_timestep, torch.Tensor) else first_timestep
    matches = (torch.as_tensor(schedule).float().cpu() == float(first)).nonzero()
    if len(matches) == 0:
        return []
    begin = int(matches[0])
    return list(schedule[begin : begin + steps])


@torch.no_grad()
def roll_out(
    probe: SignalRecorder,
    inputs: ImageInputs,
    scheduler,
    start: torch.Tensor,
    steps: int,
    *,
    guidance_scale: float,
    cond: Mapping,
    seed: int = 0,
) -> bool:
    """Run `steps` guided denoising steps from `start` ((draws, C, h, w), unscaled latents) on a copy of
    `scheduler` (as the loop began), the text `cond` replacing the first step's, into `probe` (whose
    taps the caller installs). False when the loop's timesteps cannot be found (nothing recorded)."""
    scheduler = copy.deepcopy(scheduler)  # the caller's copy stays as the loop began, for another roll-out
    timesteps = loop_timesteps(scheduler, inputs.timestep, steps)
    if len(timesteps) < steps:
        return False
    stochastic = "generator" in inspect.signature(scheduler.step).parameters
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = start
    for index, timestep in enumerate(timesteps):
        probe.step = index
        sample = scheduler.scale_model_input(latents, timestep)
        eps_uncond, eps_text = inputs.predict(probe.unet, sample, cond=cond, timestep=timestep)
        guided = eps_uncond + guidance_scale * (eps_text - eps_uncond)
        extra = {"generator": generator} if stochastic else {}
        stepped = scheduler.step(guided, timestep, latents, return_dict=False, **extra)[0]
        probe.on_step_latents(index, stepped, latents)
        probe.continue_from(index + 1, stepped)
        latents = stepped
    probe.step = steps
    return True
