"""The SDXL families: text-to-image, img2img, inpaint and ControlNet.

SDXL conditions its UNet on two text encoders (their states concatenated) plus the second one's
pooled embedding and the size/crop "time ids" (`added_cond_kwargs`). A new text (a prompt without
its concepts, a re-sample's prompt) brings its own pooled embedding; the time ids are replayed.
"""

from __future__ import annotations

from dataclasses import replace

from diffusers import (
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from ...signals.replay import ImageInputs
from ..outputs import GuardedStableDiffusionXLPipelineOutput
from .base import Family, PromptText, TextConditioning, text_encoding_options
from .stable_diffusion import ControlImage, strength_steps


class StableDiffusionXLFamily(Family):
    """`StableDiffusionXLPipeline`."""

    name = "stable-diffusion-xl"
    parent = StableDiffusionXLPipeline
    output_class = GuardedStableDiffusionXLPipelineOutput
    text_arguments = ("prompt", "prompt_2")
    negative_text_arguments = ("negative_prompt", "negative_prompt_2")
    per_prompt_arguments = (
        "prompt",
        "prompt_2",
        "negative_prompt",
        "negative_prompt_2",
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )
    fingerprinted = ("unet", "text_encoder", "text_encoder_2")

    def denoising_steps(self, arguments: dict) -> int | None:
        if arguments.get("denoising_end") is not None or arguments.get("denoising_start") is not None:
            return None  # a fraction of the schedule: counted once the loop runs
        return Family.denoising_steps(self, arguments)

    def steps_argument(self, arguments: dict) -> str:
        if arguments.get("denoising_end") is not None:
            return "denoising_end"
        return Family.steps_argument(self, arguments)

    def encode_text(self, pipe, prompt: PromptText, device, dtype, arguments: dict) -> TextConditioning:
        states, _, pooled, _ = pipe.encode_prompt(
            prompt=prompt.text,
            prompt_2=prompt.text_2,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            **text_encoding_options(arguments),
        )
        return TextConditioning(states.to(dtype), {"added_cond_kwargs": {"text_embeds": pooled.to(dtype)}})

    def unconditional_inputs(self, pipe, arguments: dict, device, dtype) -> dict:
        _, states, _, pooled = pipe.encode_prompt(
            prompt=[""] * self.num_prompts(arguments),
            device=device,
            num_images_per_prompt=self.images_per_prompt(arguments),
            do_classifier_free_guidance=True,
            negative_prompt=arguments.get("negative_prompt"),
            negative_prompt_2=arguments.get("negative_prompt_2"),
            negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
            negative_pooled_prompt_embeds=arguments.get("negative_pooled_prompt_embeds"),
            **text_encoding_options(arguments),
        )
        return {"encoder_hidden_states": states.to(dtype), "added_cond_kwargs": {"text_embeds": pooled.to(dtype)}}

    def resample_arguments(self, pipe, arguments: dict, image: int, plan, inputs: ImageInputs, generator) -> dict:
        """As `Family.resample_arguments`; a plan's `pooled_text` replaces the pooled embedding, so
        words a mitigation hides from cross-attention do not reach the UNet through it."""
        if plan.pooled_text is None:
            return Family.resample_arguments(self, pipe, arguments, image, plan, inputs, generator)
        device, dtype = inputs.cond_states.device, inputs.cond_states.dtype
        if plan.prompt_embeds is None:  # a pooled embedding of its own needs the prompt as embeddings
            shown = self.prompt_text(arguments, image)
            if plan.prompt == shown.text:  # what the UNet saw
                states = inputs.cond_states
            else:  # encoded as the call encodes its prompt (clip_skip, LoRA scale)
                text = PromptText(plan.prompt, shown.text_2)
                states = self.encode_text(pipe, text, device, dtype, arguments).states
            plan = replace(plan, prompt_embeds=states)
        call = Family.resample_arguments(self, pipe, arguments, image, plan, inputs, generator)
        pooled = self.encode_text(pipe, PromptText(plan.pooled_text), device, dtype, arguments)
        call["pooled_prompt_embeds"] = pooled.extra["added_cond_kwargs"]["text_embeds"]
        return call

    def embeds_arguments(self, embeds, inputs: ImageInputs) -> dict:
        uncond = inputs.uncond or {}
        return {
            "prompt_embeds": embeds,
            "pooled_prompt_embeds": inputs.cond["added_cond_kwargs"]["text_embeds"],
            "negative_prompt_embeds": uncond.get("encoder_hidden_states"),
            "negative_pooled_prompt_embeds": uncond.get("added_cond_kwargs", {}).get("text_embeds"),
        }


class StableDiffusionXLImg2ImgFamily(StableDiffusionXLFamily):
    """`StableDiffusionXLImg2ImgPipeline` (the refiner too: it has only the second text encoder)."""

    name = "stable-diffusion-xl-img2img"
    parent = StableDiffusionXLImg2ImgPipeline
    image_inputs = ("image",)
    per_image_arguments = ("image",)
    starts_from_image = True

    def denoising_steps(self, arguments: dict) -> int | None:
        if arguments.get("denoising_start") is not None or arguments.get("denoising_end") is not None:
            return None
        return strength_steps(self, arguments)

    def steps_argument(self, arguments: dict) -> str:
        for name in ("denoising_start", "denoising_end"):
            if arguments.get(name) is not None:
                return name
        return "strength"


class StableDiffusionXLInpaintFamily(StableDiffusionXLImg2ImgFamily):
    """`StableDiffusionXLInpaintPipeline`."""

    name = "stable-diffusion-xl-inpaint"
    parent = StableDiffusionXLInpaintPipeline
    image_inputs = ("image", "mask_image")
    per_image_arguments = ("image", "mask_image", "masked_image_latents")


class StableDiffusionXLControlNetFamily(ControlImage, StableDiffusionXLFamily):
    """`StableDiffusionXLControlNetPipeline`."""

    name = "stable-diffusion-xl-controlnet"
    parent = StableDiffusionXLControlNetPipeline


class StableDiffusionXLControlNetImg2ImgFamily(ControlImage, StableDiffusionXLImg2ImgFamily):
    """`StableDiffusionXLControlNetImg2ImgPipeline`: SDXL img2img steered by a ControlNet's `control_image`."""

    name = "stable-diffusion-xl-controlnet-img2img"
    parent = StableDiffusionXLControlNetImg2ImgPipeline
    control_argument = "control_image"


class StableDiffusionXLControlNetInpaintFamily(ControlImage, StableDiffusionXLInpaintFamily):
    """`StableDiffusionXLControlNetInpaintPipeline`: SDXL inpainting steered by a ControlNet's `control_image`."""

    name = "stable-diffusion-xl-controlnet-inpaint"
    parent = StableDiffusionXLControlNetInpaintPipeline
    control_argument = "control_image"
