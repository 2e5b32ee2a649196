"""A pipeline with an IP-Adapter loaded (image prompts beside the text): the guard leaves its images
alone where it does not act, and every re-sample keeps the image prompt and applies its own edit."""

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import memguard
from memguard import GuardConfig, Policy
from memguard.mitigation import DEFAULT_MITIGATION, NUDGED_PROMPT, PROMPT_MASKING
from memguard.testbed.tiny import tiny_family_pipeline

FAMILIES = ["stable-diffusion", "stable-diffusion-xl", "stable-diffusion-img2img"]
IMAGE_EMBED_DIM = 16
_IMAGE = np.random.default_rng(0).random((32, 32, 3)).astype("float32")


def load_tiny_ip_adapter(pipe, folder) -> None:
    """Random IP-Adapter weights for `pipe`'s UNet, written as an IP-Adapter file and loaded through
    `pipe.load_ip_adapter` as a user's would be (no image encoder: calls pass image embeddings)."""
    generator = torch.Generator().manual_seed(0)
    dim = pipe.unet.config.cross_attention_dim
    weights = {
        "image_proj.proj.weight": torch.randn(4 * dim, IMAGE_EMBED_DIM, generator=generator) * 0.2,
        "image_proj.proj.bias": torch.zeros(4 * dim),
        "image_proj.norm.weight": torch.ones(dim),
        "image_proj.norm.bias": torch.zeros(dim),
    }
    for key_id, name in enumerate(pipe.unet.attn_processors):
        layer = pipe.unet.get_submodule(name.removesuffix(".processor"))
        if getattr(layer, "is_cross_attention", False):  # the loader numbers every processor, reads the cross ones
            for projection in ("to_k", "to_v"):
                shape = getattr(layer, projection).weight.shape
                weights[f"ip_adapter.{key_id}.{projection}_ip.weight"] = torch.randn(shape, generator=generator) * 0.2
    save_file(weights, str(folder / "ip_adapter.safetensors"))
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip_adapter.safetensors", image_encoder_folder=None)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    loaded = {}
    for name in FAMILIES:
        pipe = tiny_family_pipeline(name)
        load_tiny_ip_adapter(pipe, tmp_path_factory.mktemp(name))
        loaded[name] = pipe
    return loaded


def embeds(seed: int) -> list[torch.Tensor]:
    """One image prompt's embeddings, (negative, positive), for the one adapter."""
    return [torch.randn(2, 1, IMAGE_EMBED_DIM, generator=torch.Generator().manual_seed(seed))]


def call(pipe, name, prompt="a red circle at the top left", image_prompt=1, **kwargs):
    inputs = dict(image=_IMAGE, strength=0.75) if "img2img" in name else dict(height=32, width=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guard's uncalibrated-threshold notice
        return pipe(
            prompt,
            ip_adapter_image_embeds=embeds(image_prompt),
            num_inference_steps=4,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
            **inputs,
            **kwargs,
        )


def resampling(mitigation) -> GuardConfig:
    return GuardConfig(threshold=-1.0, policy=Policy(max_attempts=1), mitigation=mitigation)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_image_prompt_counts_and_flag_mode_returns_the_parents_images(pipes, name):
    pipe = pipes[name]
    parent = call(pipe, name).images
    assert not np.array_equal(parent, call(pipe, name, image_prompt=2).images)  # the adapter is in use
    flagged = call(memguard.guard(pipe, GuardConfig(threshold=-1.0, policy=Policy.uniform("flag"))), name)
    assert np.array_equal(flagged.images, parent)
    assert flagged.memorization[0].status == "checked" and flagged.memorization[0].memorized


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mitigation", [DEFAULT_MITIGATION, NUDGED_PROMPT, PROMPT_MASKING], ids=lambda m: m.name)
def test_every_resample_keeps_the_image_prompt(pipes, name, mitigation):
    guarded = memguard.guard(pipes[name], resampling(mitigation))
    first, other = call(guarded, name), call(guarded, name, image_prompt=2)
    for out in (first, other):
        report = out.memorization[0]
        assert report.status == "checked" and report.action == "resampled", report.reason
    assert not np.array_equal(first.images, other.images)


@pytest.mark.parametrize("name", FAMILIES)
def test_masking_every_word_hides_the_prompt_beside_an_image_prompt(pipes, name):
    # every word masked out of cross-attention: two prompts with one image prompt give one picture
    guarded = memguard.guard(pipes[name], resampling(PROMPT_MASKING))
    one = call(guarded, name, prompt="a red circle at the top left").images
    other = call(guarded, name, prompt="a large blue square on a green background").images
    assert np.abs(one - other).max() < 1e-5
