"""Tiny random-weight image encoders saved to disk, as users would hand them to memguard: DINOv2 and
CLIP folders (`save_pretrained` weights and image processor config) and a traced TorchScript file.
Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
VIT = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64)


def save_dinov2(folder: Path, seed: int = 0, registers: bool = False, shortest_edge: int = 32, crop: int = 28) -> Path:
    """A 2-layer DINOv2 (patch 14, 28x28 crops: 4 patches) with DINOv2's processor settings, scaled down."""
    from transformers import (
        BitImageProcessorPil,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    torch.manual_seed(seed)
    if registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(**VIT, image_size=28, patch_size=14, num_register_tokens=2)
        )
    else:
        model = Dinov2Model(Dinov2Config(**VIT, image_size=28, patch_size=14))
    model.save_pretrained(folder)
    processor = BitImageProcessorPil(
        size={"shortest_edge": shortest_edge},
        crop_size={"height": crop, "width": crop},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    processor.save_pretrained(folder)
    return folder


def save_clip(folder: Path, seed: int = 0, full: bool = True, projection: bool = True) -> Path:
    """A 2-layer CLIP (32x32 images, patch 8, 16-dim embeddings); `full`: a whole CLIPModel checkpoint,
    text tower included, as the hub's CLIP repos are; the processor config in the legacy form
    (`feature_extractor_type`, integer sizes) that openai/clip-vit-base-patch32 still ships."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    vision = dict(**VIT, image_size=32, patch_size=8, projection_dim=16)
    if full:
        text = dict(**VIT, vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    elif projection:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    else:
        model = CLIPVisionModel(CLIPVisionConfig(**vision))
    model.save_pretrained(folder)
    processor = {
        "feature_extractor_type": "CLIPFeatureExtractor",
        "do_resize": True,
        "size": 32,
        "do_center_crop": True,
        "crop_size": 32,
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


class _PooledColours(torch.nn.Module):
    """A fixed 1x1 colour mix, then 4x4 average pooling: a coarse layout descriptor (48 dims), so a
    near-duplicate scores near 1 and an unrelated image clearly lower."""

    def __init__(self, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.mix = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1) + 0.1 * torch.randn(3, 3, 1, 1, generator=generator))
            self.mix.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(self.mix(x), 4).flatten(1)


class _FeatureMap(torch.nn.Module):
    """Returns a 4-D map, not (N, D) descriptors: what memguard must refuse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :2, :2]


def save_torchscript(file: Path, seed: int = 0, descriptors: bool = True) -> Path:
    import warnings

    module = _PooledColours(seed) if descriptors else _FeatureMap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(module, torch.zeros(1, 3, 32, 32)).save(str(file))
    return file
