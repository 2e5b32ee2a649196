"""A tiny random-weight Stable Diffusion pipeline built from configs, offline (tests, smoke runs).

It has SD's architecture (AutoencoderKL, UNet2DConditionModel with cross-attention, CLIP text
encoder and tokenizer) at toy size; its images are noise-like because nothing is trained.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .models import inference_scheduler
from .tokenizer import load_clip_tokenizer


def tiny_components(seed: int = 0, sample_size: int = 8) -> dict:
    """The modules of a tiny SD pipeline (latent `sample_size`, image 4x that) with seeded weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
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
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
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
