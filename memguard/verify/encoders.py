"""Image encoders for the copy-verification index: images in, L2-normalized float32 rows out.

- `OpenClipEncoder`: an open_clip image tower (needs open_clip_torch and torchvision, and the
  weights: downloaded once, or cached). What to use on real models.
- `PixelEncoder`: the image resized to 32x32, centred and L2-normalized, so inner product is the
  Pearson correlation of pixels. Needs nothing, downloads nothing; it only recognizes near-pixel-exact
  copies, which is what the 32x32 testbed produces. For the testbed and tests, not for real models.

An encoder has a `name` that rebuilds it (`encoder_from_name`), stored in the index's sidecar so an
index is never searched with embeddings of another encoder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

ImageLike = str | os.PathLike | Image.Image | np.ndarray

PIXEL_PREFIX = "pixel-"
CLIP_PREFIX = "open_clip:"
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"


class ImageEncoder(Protocol):
    name: str
    dim: int

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(len(images), dim) float32, rows L2-normalized (a zero row for a blank image)."""
        ...


def as_pil(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an (H, W, 3) array (uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    try:
        with Image.open(Path(image)) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {image}: {err}") from None


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class PixelEncoder:
    """Pixels as the embedding (testbed and tests only; see the module docstring)."""

    def __init__(self, size: int = 32):
        if size < 2:
            raise ValueError(f"PixelEncoder size must be >= 2, got {size}")
        self.size = size
        self.name = f"{PIXEL_PREFIX}{size}"
        self.dim = size * size * 3

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        rows = np.stack([self._pixels(image) for image in images])
        rows -= rows.mean(axis=1, keepdims=True)  # centred: a correlation, not "both mostly bright"
        return l2_normalize(rows)

    def _pixels(self, image: ImageLike) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.shape == (self.size, self.size, 3):
            array = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
            return array.reshape(-1)  # already at size: skip the PIL round trip (the benchmark's hot path)
        pil = as_pil(image)
        if pil.size != (self.size, self.size):
            pil = pil.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return (np.asarray(pil, np.float32) / 255).reshape(-1)


class OpenClipEncoder:
    """An open_clip image tower; `model`/`pretrained` as in `open_clip.create_model_and_transforms`."""

    def __init__(
        self,
        model: str = DEFAULT_CLIP_MODEL,
        pretrained: str = DEFAULT_CLIP_PRETRAINED,
        device: str = "cpu",
        batch_size: int = 64,
    ):
        try:
            import open_clip
        except ImportError as err:  # open_clip imports torchvision, often the missing piece
            raise ImportError(
                f"the open_clip encoder needs open_clip_torch and torchvision ({err}); install them with "
                "`pip install 'memguard[clip]' torchvision`, or use the offline PixelEncoder for the testbed"
            ) from None
        import torch

        self._torch = torch
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
        self.model = self.model.eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.name = f"{CLIP_PREFIX}{model}/{pretrained}"
        self.dim = int(self.model.visual.output_dim)

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        torch = self._torch
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack([self.preprocess(as_pil(im)) for im in images[start : start + self.batch_size]])
                out.append(self.model.encode_image(batch.to(self.device)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


def encoder_from_name(name: str, device: str = "cpu") -> ImageEncoder:
    """Rebuild the encoder an index was built with, from the name in its sidecar."""
    if name.startswith(PIXEL_PREFIX) and name[len(PIXEL_PREFIX) :].isdigit():
        return PixelEncoder(int(name[len(PIXEL_PREFIX) :]))
    if name.startswith(CLIP_PREFIX) and "/" in name:
        model, pretrained = name[len(CLIP_PREFIX) :].split("/", 1)
        return OpenClipEncoder(model, pretrained, device=device)
    raise ValueError(f"unknown encoder {name!r} (expected 'pixel-<size>' or 'open_clip:<model>/<pretrained>')")


def encode_in_batches(encoder: ImageEncoder, images: Iterable[ImageLike], batch_size: int = 1024):
    """Yield encoded batches, so a large image folder is never held in memory at once."""
    batch: list[ImageLike] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            yield encoder.encode(batch)
            batch = []
    if batch:
        yield encoder.encode(batch)
