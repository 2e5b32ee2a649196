"""Architecture of the testbed model: SD's components (VAE, conditional UNet, CLIP text encoder) at toy size.

Sizes are chosen so that the weights (fp32) stay under 30 MB (29.6 MB shipped) and train within an hour on a
2-core CPU; the text encoder's 49,408-row embedding (the real CLIP vocabulary) is a third of that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

IMAGE_SIZE = 32
LATENT_SIZE = 16  # the VAE downsamples once (factor 2): 32x32x3 -> 16x16x4
LATENT_CHANNELS = 4
TEXT_HIDDEN = 64

# SD's noise schedule; the pipeline samples with DDIM, training adds noise with DDPM's q(x_t | x_0).
# It leaves sqrt(alpha_bar_T) = 0.068 of the image in x_T, which at 16x16 latents leaks the layout:
# a model trained on it reads the layout from x_t and ignores position words. A terminal signal
# (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed") rescales the betas
# so that sqrt(alpha_bar_T) is that value instead: 0 is Lin's zero terminal SNR (needs v-prediction,
# since epsilon is undefined when x_T is all noise); sampling then uses "trailing" DDIM steps, which
# start at t = T. The README's testbed section measures what each choice costs.
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


@dataclass(frozen=True)
class ModelSizes:
    vae_channels: tuple[int, ...] = (32, 48)
    unet_channels: tuple[int, ...] = (48, 96, 96)
    text_layers: int = 2
    text_intermediate: int = 128


def build_vae(sizes: ModelSizes) -> AutoencoderKL:
    n = len(sizes.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=sizes.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def _unet_layout(sizes: ModelSizes) -> dict:
    # Cross-attention at 8x8 and 4x4 (and the mid block); the 16x16 level is convolutional, for speed.
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=sizes.unet_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_unet(sizes: ModelSizes) -> UNet2DConditionModel:
    return UNet2DConditionModel(**_unet_layout(sizes), cross_attention_dim=TEXT_HIDDEN)


def _text_config(sizes: ModelSizes, hidden: int, **extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=sizes.text_intermediate,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


def build_text_encoder(sizes: ModelSizes) -> CLIPTextModel:
    return CLIPTextModel(_text_config(sizes, TEXT_HIDDEN))


# The SDXL-architecture variant: two text encoders whose penultimate states are concatenated (half the
# SD variant's width each, so the cross-attention sees the same 64 dimensions and the weights stay under
# 30 MB: each encoder's 49,408-row embedding costs 6.3 MB at width 32), the second one's pooled
# projection and six size/crop "time ids" as extra UNet conditioning, as in SDXL.
XL_TEXT_HIDDEN = TEXT_HIDDEN // 2
XL_POOLED = 32
XL_TIME_EMBED = 8
XL_TIME_IDS = (IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE)  # original size, crop top-left, target size


def build_xl_unet(sizes: ModelSizes) -> UNet2DConditionModel:
    """The same layout as `build_unet`, conditioned as SDXL's UNet is."""
    return UNet2DConditionModel(
        **_unet_layout(sizes),
        cross_attention_dim=2 * XL_TEXT_HIDDEN,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=XL_TIME_EMBED,
        projection_class_embeddings_input_dim=len(XL_TIME_IDS) * XL_TIME_EMBED + XL_POOLED,
    )


def build_xl_text_encoders(sizes: ModelSizes) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    return (
        CLIPTextModel(_text_config(sizes, XL_TEXT_HIDDEN)),
        CLIPTextModelWithProjection(_text_config(sizes, XL_TEXT_HIDDEN, projection_dim=XL_POOLED)),
    )


def check_terminal_signal(terminal_signal: float) -> None:
    if not 0.0 <= terminal_signal < 1.0:
        raise ValueError(f"terminal_signal must be in [0, 1), got {terminal_signal!r}")


def rescaled_betas(terminal_signal: float) -> list[float]:
    """SD's betas, rescaled so that sqrt(alpha_bar_T) == terminal_signal (Lin et al.'s Algorithm 1 with a
    target instead of 0): sqrt(alpha_bar) is shifted and scaled linearly, keeping its value at t = 0."""
    check_terminal_signal(terminal_signal)
    sd = DDPMScheduler(**{k: v for k, v in SCHEDULE.items() if k != "set_alpha_to_one"})
    signal = sd.alphas_cumprod.double().sqrt()
    first, last = signal[0].clone(), signal[-1].clone()
    signal = (signal - last) * (first - terminal_signal) / (first - last) + terminal_signal
    alpha_bar = signal**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return (1 - alphas).tolist()


def _schedule(terminal_signal: float | None) -> dict:
    if terminal_signal is None:
        return dict(SCHEDULE)
    if terminal_signal == 0.0:  # diffusers' own zero-SNR rescale, as the zero-SNR retrain was trained
        return {**SCHEDULE, "rescale_betas_zero_snr": True}
    return {**SCHEDULE, "trained_betas": rescaled_betas(terminal_signal)}


def inference_scheduler(prediction_type: str = "epsilon", terminal_signal: float | None = None) -> DDIMScheduler:
    spacing = "leading" if terminal_signal is None else "trailing"
    return DDIMScheduler(**_schedule(terminal_signal), prediction_type=prediction_type, timestep_spacing=spacing)


def training_scheduler(prediction_type: str = "epsilon", terminal_signal: float | None = None) -> DDPMScheduler:
    schedule = {k: v for k, v in _schedule(terminal_signal).items() if k != "set_alpha_to_one"}
    return DDPMScheduler(**schedule, prediction_type=prediction_type)
