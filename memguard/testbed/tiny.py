"""Tiny random-weight pipelines of every guarded family, built from configs offline (tests, smoke runs).

They have the families' architectures (AutoencoderKL, UNet2DConditionModel with cross-attention, CLIP
text encoders and tokenizers; SDXL's second encoder, pooled embeddings and time ids; an inpainting
UNet's mask channels; a ControlNet) at toy size; their images are noise-like because nothing is
trained.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
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
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .models import inference_scheduler
from .tokenizer import load_clip_tokenizer


def tiny_components(seed: int = 0, sample_size: int = 8, unet_in_channels: int = 4) -> dict:
    """The modules of a tiny SD pipeline (latent `sample_size`, image 4x that) with seeded weights
    (`unet_in_channels=9`: an inpainting UNet)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=unet_in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size * 4,
    )
    text_encoder = CLIPTextModel(_text_config())
    scheduler = inference_scheduler()  # SD 1.x's: epsilon on SD's betas (untrained weights need no more)
    return dict(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=load_clip_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def tiny_pipeline(seed: int = 0, cls: type = StableDiffusionPipeline, sample_size: int = 8, **kwargs):
    """A tiny random SD pipeline of class `cls` (StableDiffusionPipeline or a guarded subclass)."""
    pipe = cls(**tiny_components(seed, sample_size), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _text_config(**changes) -> CLIPTextConfig:
    return CLIPTextConfig(
        **{
            **dict(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            ),
            **changes,
        }
    )


def _sdxl_unet_config(sample_size: int, in_channels: int = 4) -> dict:
    return dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,  # the two text encoders' states, concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + the pooled embedding
        norm_num_groups=8,
    )


def tiny_sdxl_components(seed: int = 0, sample_size: int = 8) -> dict:
    """The modules of a tiny SDXL pipeline: two text encoders (the second with a projection, whose
    pooled output and the six size/crop time ids condition the UNet), seeded weights."""
    base = tiny_components(seed, sample_size)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**_sdxl_unet_config(sample_size))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection_dim=32))
    return dict(
        unet=unet.eval(),
        vae=base["vae"],
        text_encoder=base["text_encoder"],
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=base["tokenizer"],
        tokenizer_2=load_clip_tokenizer(),
        scheduler=base["scheduler"],
        image_encoder=None,
        feature_extractor=None,
    )


def tiny_controlnet(seed: int = 0, xl: bool = False) -> ControlNetModel:
    """A tiny ControlNet matching the tiny (SDXL) UNet; its conditioning image is at pixel size."""
    torch.manual_seed(seed + 2)
    if xl:
        config = {
            k: v for k, v in _sdxl_unet_config(8).items() if k not in ("out_channels", "up_block_types", "sample_size")
        }
    else:
        config = dict(
            in_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
    # the conditioning embedding downsamples by 2 ** (len - 1): 4, the tiny VAE's factor
    return ControlNetModel(**config, conditioning_embedding_out_channels=(8, 16, 16)).eval()


# Each guarded family's parent class, with how to build its tiny components.
TINY_FAMILIES = {
    "stable-diffusion": (StableDiffusionPipeline, lambda seed: tiny_components(seed)),
    "stable-diffusion-img2img": (StableDiffusionImg2ImgPipeline, lambda seed: tiny_components(seed)),
    "stable-diffusion-inpaint": (
        StableDiffusionInpaintPipeline,
        lambda seed: tiny_components(seed, unet_in_channels=9),
    ),
    "stable-diffusion-controlnet": (
        StableDiffusionControlNetPipeline,
        lambda seed: {**tiny_components(seed), "controlnet": tiny_controlnet(seed)},
    ),
    "stable-diffusion-controlnet-img2img": (
        StableDiffusionControlNetImg2ImgPipeline,
        lambda seed: {**tiny_components(seed), "controlnet": tiny_controlnet(seed)},
    ),
    "stable-diffusion-controlnet-inpaint": (
        StableDiffusionControlNetInpaintPipeline,
        lambda seed: {**tiny_components(seed, unet_in_channels=9), "controlnet": tiny_controlnet(seed)},
    ),
    "stable-diffusion-xl": (StableDiffusionXLPipeline, lambda seed: tiny_sdxl_components(seed)),
    "stable-diffusion-xl-img2img": (StableDiffusionXLImg2ImgPipeline, lambda seed: tiny_sdxl_components(seed)),
    "stable-diffusion-xl-inpaint": (StableDiffusionXLInpaintPipeline, lambda seed: tiny_sdxl_components(seed)),
    "stable-diffusion-xl-controlnet": (
        StableDiffusionXLControlNetPipeline,
        lambda seed: {**tiny_sdxl_components(seed), "controlnet": tiny_controlnet(seed, xl=True)},
    ),
    "stable-diffusion-xl-controlnet-img2img": (
        StableDiffusionXLControlNetImg2ImgPipeline,
        lambda seed: {**tiny_sdxl_components(seed), "controlnet": tiny_controlnet(seed, xl=True)},
    ),
    "stable-diffusion-xl-controlnet-inpaint": (
        StableDiffusionXLControlNetInpaintPipeline,
        lambda seed: {**tiny_sdxl_components(seed), "controlnet": tiny_controlnet(seed, xl=True)},
    ),
}


def tiny_family_pipeline(family: str, seed: int = 0):
    """A tiny random pipeline of a guarded family's parent class (see `TINY_FAMILIES`)."""
    cls, components = TINY_FAMILIES[family]
    parts = components(seed)
    accepted = set(inspect.signature(cls.__init__).parameters)
    pipe = cls(**{k: v for k, v in parts.items() if k in accepted})
    pipe.set_progress_bar_config(disable=True)
    return pipe
