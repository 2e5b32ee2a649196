"""The Stable Diffusion 1.x/2.x families: text-to-image, img2img, inpaint and ControlNet."""

from __future__ import annotations

import numbers
from typing import ClassVar

from diffusers import (
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from ...errors import MemguardValueError
from .base import Family, select_prompt


class StableDiffusionFamily(Family):
    """`StableDiffusionPipeline` (SD 1.x and 2.x, epsilon and v-prediction)."""

    name = "stable-diffusion"
    parent = StableDiffusionPipeline


def strength_steps(family: Family, arguments: dict) -> int:
    """Steps an image-to-image loop runs: `strength` of the schedule, as diffusers' `get_timesteps`."""
    steps = Family.denoising_steps(family, arguments)
    strength = arguments.get("strength")
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
        raise MemguardValueError(f"strength must be a number in [0, 1], got {strength!r}")
    return min(int(steps * strength), steps)


class StableDiffusionImg2ImgFamily(Family):
    """`StableDiffusionImg2ImgPipeline`: the loop starts from the init image's latents with noise
    added at `strength`; a re-sample draws new noise for the same image."""

    name = "stable-diffusion-img2img"
    parent = StableDiffusionImg2ImgPipeline
    image_inputs = ("image",)
    per_image_arguments = ("image",)
    starts_from_image = True

    def denoising_steps(self, arguments: dict) -> int:
        return strength_steps(self, arguments)

    def steps_argument(self, arguments: dict) -> str:
        return "strength"


class StableDiffusionInpaintFamily(StableDiffusionImg2ImgFamily):
    """`StableDiffusionInpaintPipeline` (4- or 9-channel UNets: the mask channels are replayed)."""

    name = "stable-diffusion-inpaint"
    parent = StableDiffusionInpaintPipeline
    image_inputs = ("image", "mask_image")
    per_image_arguments = ("image", "mask_image", "masked_image_latents")


class ControlImage:
    """Mix-in of the ControlNet families: the control image (`image`, or `control_image` beside an init
    image) is per prompt, or (several ControlNets) a list of those, one per net; the ControlNet's
    weights are fingerprinted with the UNet's. A family that mixes it in is the family after it in
    its bases plus that: its control input joins the per-prompt arguments and the image inputs, and
    "controlnet" the fingerprinted modules."""

    control_argument: ClassVar[str] = "image"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        base = mro[mro.index(ControlImage) + 1]  # the family this one adds a ControlNet to
        cls.per_prompt_arguments = (*base.per_prompt_arguments, cls.control_argument)
        cls.image_inputs = (*base.image_inputs, cls.control_argument)
        cls.fingerprinted = (*base.fingerprinted, "controlnet")

    def select(self, pipe, name: str, value, prompt: int, num_prompts: int):
        if name != self.control_argument:
            return super().select(pipe, name, value, prompt, num_prompts)
        if isinstance(getattr(pipe, "controlnet", None), MultiControlNetModel) and isinstance(value, (list, tuple)):
            return [select_prompt(v, prompt, num_prompts) for v in value]
        return select_prompt(value, prompt, num_prompts)


class StableDiffusionControlNetFamily(ControlImage, Family):
    """`StableDiffusionControlNetPipeline`: the ControlNet's residuals of the first step are replayed
    with the UNet inputs; the ControlNet's weights are part of what a calibration fingerprints."""

    name = "stable-diffusion-controlnet"
    parent = StableDiffusionControlNetPipeline


class StableDiffusionControlNetImg2ImgFamily(ControlImage, StableDiffusionImg2ImgFamily):
    """`StableDiffusionControlNetImg2ImgPipeline`: img2img (the init `image`, `strength`) steered by a
    ControlNet's `control_image`."""

    name = "stable-diffusion-controlnet-img2img"
    parent = StableDiffusionControlNetImg2ImgPipeline
    control_argument = "control_image"


class StableDiffusionControlNetInpaintFamily(ControlImage, StableDiffusionInpaintFamily):
    """`StableDiffusionControlNetInpaintPipeline`: inpainting (the init `image`, `mask_image`) steered
    by a ControlNet's `control_image`."""

    name = "stable-diffusion-controlnet-inpaint"
    parent = StableDiffusionControlNetInpaintPipeline
    control_argument = "control_image"
