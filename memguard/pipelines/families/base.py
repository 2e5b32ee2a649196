"""`Family`: everything the guard must know about one diffusers pipeline family, in one place.

The guarded call (`guarded_call.py`, `guarded_pass.py`) knows no family: it asks the family how to
bind a call's arguments, which prompt is behind each image, how many denoising steps the loop will
run, how to encode a new text the way the pipeline would (with the extra UNet inputs that depend on
it), what the unconditional branch is, how to call the pipeline again for one image (a re-sample),
which modules a calibration fingerprints and which output class to return. Everything else the
guard's own UNet evaluations need (SDXL's time ids, ControlNet's residuals, an inpainting UNet's mask
channels) is replayed from the loop's first UNet call (`memguard.signals.replay`).

The base class is Stable Diffusion 1.x/2.x text-to-image; each family overrides what differs.
Adding a family: subclass `Family`, set `name` and `parent`, override what differs, register an
instance in `families/__init__.py` and add its guarded class in `pipelines/guarded.py`.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

from ...errors import MemguardTypeError, MemguardValueError
from ...mitigation import ResamplePlan
from ...signals.replay import ImageInputs
from ..outputs import GuardedPipelineOutput

# The parents' **kwargs only exists for these deprecated arguments; anything else is a typo that
# diffusers would silently ignore.
DEPRECATED_KEYWORDS = frozenset({"callback", "callback_steps"})


@dataclass(frozen=True)
class PromptText:
    """The prompt text behind one image: `text` for the (first) text encoder and, in two-encoder
    families, `text_2` for the second one (None: the same as `text`)."""

    text: str | None
    text_2: str | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(t for t in (self.text, self.text_2) if t is not None)


@dataclass(frozen=True)
class TextConditioning:
    """A text as the UNet receives it: the text-encoder states and the UNet inputs that depend on the
    text (SDXL's pooled `text_embeds`), as keyword arguments that override the first step's."""

    states: torch.Tensor  # (k, T, D)
    extra: dict

    def as_kwargs(self) -> dict:
        return {"encoder_hidden_states": self.states, **self.extra}


def select_prompt(value, prompt: int, num_prompts: int):
    """The part of a per-prompt argument that belongs to prompt `prompt` (a list or batch of one),
    or the argument itself when it holds one entry for every prompt (a single image, one string)."""
    if num_prompts <= 1 or value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == num_prompts:
        return [value[prompt]]
    if hasattr(value, "shape") and len(value.shape) > 0 and value.shape[0] == num_prompts:
        return value[prompt : prompt + 1]
    return value


def select_image(value, image: int, num_images: int):
    """The entry of a per-image input (img2img's `image`, inpaint's `mask_image`) that the pipeline
    pairs with image `image` of `num_images`: diffusers tiles a batch of k inputs over the images
    (`torch.cat([inputs] * (num_images // k))`), so image i starts from input i mod k, whether k is one
    per prompt or one per image. A single input (one PIL image, one (C, H, W) tensor) is returned as
    it is."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        count = len(value)
        return [value[image % count]] if count > 1 and num_images % count == 0 else value
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) == 4 and shape[0] > 1 and num_images % shape[0] == 0:
        index = image % shape[0]
        return value[index : index + 1]
    return value


def _positive_int(value, name: str) -> int:
    """`value` as an int >= 1; any integral number the parent accepts (NumPy's too), not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MemguardValueError(
            f"{name} must be an int >= 1, got {value!r}"
            if isinstance(value, (numbers.Number, type(None)))
            else f"{name} must be an int >= 1, got a {type(value).__name__}"
        )
    return int(value)


def text_encoding_options(arguments: dict) -> dict:
    """How the call has its prompts encoded besides the text: `clip_skip`, and the LoRA scale the
    pipeline takes from `cross_attention_kwargs["scale"]` for a text-encoder LoRA. The guard's own
    encodings (a prompt without its concepts, a re-sample's changed prompt) use the same."""
    options = {}
    if arguments.get("clip_skip") is not None:
        options["clip_skip"] = arguments["clip_skip"]
    scale = (arguments.get("cross_attention_kwargs") or {}).get("scale")
    if scale is not None:
        options["lora_scale"] = scale
    return options


class Family:
    """Stable Diffusion 1.x/2.x text-to-image (`StableDiffusionPipeline`)."""

    name: ClassVar[str] = "stable-diffusion"
    parent: ClassVar[type]
    output_class: ClassVar[type] = GuardedPipelineOutput
    # prompt arguments whose text is behind each image, one per text encoder
    text_arguments: ClassVar[tuple[str, ...]] = ("prompt",)
    negative_text_arguments: ClassVar[tuple[str, ...]] = ("negative_prompt",)
    # arguments with one entry per prompt, cut to the image's prompt when one image is re-sampled
    per_prompt_arguments: ClassVar[tuple[str, ...]] = (
        "prompt",
        "negative_prompt",
        "prompt_embeds",
        "negative_prompt_embeds",
    )
    # arguments with one entry per image or per prompt that the pipeline tiles over the images (img2img's
    # init image, inpaint's mask), cut to the entry the image started from (`select_image`)
    per_image_arguments: ClassVar[tuple[str, ...]] = ()
    # image arguments a call cannot do without (an init image, a mask, a control image)
    image_inputs: ClassVar[tuple[str, ...]] = ()
    # the loop starts from an image with noise added (img2img, inpaint), not from pure noise
    starts_from_image: ClassVar[bool] = False
    # modules whose weights make the scores what they are (calibrations are tied to them)
    fingerprinted: ClassVar[tuple[str, ...]] = ("unet", "text_encoder")
    # the denoising network whose calls and cross-attention the taps read
    denoiser_name: ClassVar[str] = "unet"

    # --- the call's arguments ---------------------------------------------------------------------
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.parent.__call__)

    def bind(self, pipe, args: tuple, kwargs: dict) -> dict:
        """The parent `__call__`'s arguments by name, defaults filled in (TypeError on an unknown one)."""
        bound = self.signature().bind(pipe, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self", None)
        extra = arguments.pop("kwargs", {})
        unknown = sorted(set(extra) - DEPRECATED_KEYWORDS)
        if unknown:
            raise MemguardTypeError(f"the pipeline call got unexpected keyword argument(s) {unknown}")
        arguments.update(extra)
        return arguments

    def num_prompts(self, arguments: dict) -> int:
        prompt = arguments.get("prompt")
        if isinstance(prompt, str):
            return 1
        if isinstance(prompt, list):
            return len(prompt)
        embeds = arguments.get("prompt_embeds")
        return int(embeds.shape[0]) if embeds is not None else 1

    def images_per_prompt(self, arguments: dict) -> int:
        return int(arguments.get("num_images_per_prompt") or 1)

    def prompt_text(self, arguments: dict, image: int) -> PromptText:
        """The text behind image `image` of a call (None where the call passed embeddings)."""
        prompt = image // self.images_per_prompt(arguments)
        texts = []
        for name in self.text_arguments:
            value = arguments.get(name)
            texts.append(value[prompt] if isinstance(value, list) else value)
        return PromptText(*texts)

    def prompt_strings(self, arguments: dict) -> list[str]:
        """Every piece of prompt text the call holds (positive and negative), for redaction."""
        strings: list[str] = []
        for name in self.text_arguments + self.negative_text_arguments:
            value = arguments.get(name)
            values = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
            strings.extend(v for v in values if isinstance(v, str) and v)
        return strings

    def denoiser(self, pipe):
        return getattr(pipe, self.denoiser_name)

    def tokenizer(self, pipe):
        """The tokenizer whose positions the cross-attention attends over (an SDXL refiner has only
        the second one)."""
        return getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)

    # --- the loop ---------------------------------------------------------------------------------
    def denoising_steps(self, arguments: dict) -> int | None:
        """Denoising steps the loop will run (None: only known once it runs)."""
        for name in ("timesteps", "sigmas"):
            if arguments.get(name) is not None:
                return len(arguments[name])
        return _positive_int(arguments.get("num_inference_steps"), "num_inference_steps")

    def steps_argument(self, arguments: dict) -> str:
        """The argument that sets how many steps run, for error messages."""
        for name in ("timesteps", "sigmas"):
            if arguments.get(name) is not None:
                return name
        return "num_inference_steps"

    def resolution(self, pipe, arguments: dict) -> tuple[int | None, int | None]:
        """The (height, width) in pixels a call generates: its own, or the pipeline's default; None
        where the image it starts from decides (img2img and inpaint without height and width)."""
        if self.starts_from_image and arguments.get("height") is None:
            return None, None
        sample_size = getattr(getattr(self.denoiser(pipe), "config", None), "sample_size", None)
        default = sample_size * pipe.vae_scale_factor if isinstance(sample_size, int) else None
        return arguments.get("height") or default, arguments.get("width") or default

    def start_of(self, prepared) -> torch.Tensor:
        """The loop's starting latents from what the pipeline's `prepare_latents` returned."""
        return prepared[0] if isinstance(prepared, tuple) else prepared

    # --- text as the UNet sees it --------------------------------------------------------------------
    def encode_text(self, pipe, prompt: PromptText, device, dtype, arguments: dict) -> TextConditioning:
        """One text encoded as the pipeline encodes the call's prompt (no guidance, one image): with
        the call's `clip_skip` and text-encoder LoRA scale (`text_encoding_options`)."""
        states = pipe.encode_prompt(
            prompt=prompt.text,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            **text_encoding_options(arguments),
        )[0]
        return TextConditioning(states.to(dtype), {})

    def unconditional_inputs(self, pipe, arguments: dict, device, dtype) -> dict:
        """UNet keyword arguments of the unconditional branch, one row per image (or one for all):
        what the pipeline would use under guidance (the negative prompt, or the empty one)."""
        encoded = pipe.encode_prompt(
            prompt=[""] * self.num_prompts(arguments),
            device=device,
            num_images_per_prompt=self.images_per_prompt(arguments),
            do_classifier_free_guidance=True,
            negative_prompt=arguments.get("negative_prompt"),
            negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
            **text_encoding_options(arguments),
        )
        return {"encoder_hidden_states": encoded[1].to(dtype)}

    # --- one image again ----------------------------------------------------------------------------
    def resample_arguments(
        self,
        pipe,
        arguments: dict,
        image: int,
        plan: ResamplePlan,
        inputs: ImageInputs,
        generator: torch.Generator,
    ) -> dict:
        """The parent call's arguments to generate image `image` alone again, as `plan` says.

        Per-prompt arguments are cut to the image's prompt, per-image inputs (an init image, a mask) to
        the one the image started from; the plan's starting latents replace the pipeline's own draw
        (pure-noise families), or the pipeline draws new noise for the image it starts from (img2img,
        inpaint); `generator` (the re-sample's own, never the caller's) drives every other draw, so
        stochastic samplers stay reproducible."""
        prompt, count = image // self.images_per_prompt(arguments), self.num_prompts(arguments)
        call = dict(arguments)
        for name in self.per_prompt_arguments:
            call[name] = self.select(pipe, name, arguments.get(name), prompt, count)
        for name in self.per_image_arguments:
            call[name] = select_image(arguments.get(name), image, count * self.images_per_prompt(arguments))
        call.update(num_images_per_prompt=1, generator=generator)
        call["latents"] = None if self.starts_from_image else plan.latents
        if plan.prompt is not None and plan.prompt_embeds is None:
            call.update(prompt=[plan.prompt], prompt_embeds=None)
        else:
            embeds = plan.prompt_embeds if plan.prompt_embeds is not None else inputs.cond_states
            for name in self.text_arguments + self.negative_text_arguments:
                call[name] = None
            call.update(self.embeds_arguments(embeds, inputs))
        return call

    def select(self, pipe, name: str, value, prompt: int, num_prompts: int):
        return select_prompt(value, prompt, num_prompts)

    def embeds_arguments(self, embeds: torch.Tensor, inputs: ImageInputs) -> dict:
        """Call arguments that condition on `embeds` (the prompt's states) instead of a text."""
        return {"prompt_embeds": embeds, "negative_prompt_embeds": inputs.uncond_states}

    # --- helpers ------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<memguard family {self.name!r} ({self.parent.__name__})>"
