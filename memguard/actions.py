"""Actions on an image the guard decided against. Blocking mirrors diffusers' safety checker:
the image is replaced by a black placeholder of the same size, type and dtype."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import PIL.Image
import torch


def blank_out(images, indices: Iterable[int]):
    """Return `images` (a list of PIL images, an ndarray or a tensor batch) with `indices` blacked out."""
    indices = sorted(set(indices))
    if not indices:
        return images
    if isinstance(images, list):
        images = list(images)
        for i in indices:
            image = images[i]
            if not isinstance(image, PIL.Image.Image):
                raise TypeError(f"cannot block an image of type {type(image).__name__}")
            images[i] = PIL.Image.new(image.mode, image.size)
        return images
    if isinstance(images, np.ndarray):
        images = images.copy()
        images[indices] = 0
        return images
    if isinstance(images, torch.Tensor):
        images = images.clone()
        images[indices] = 0
        return images
    raise TypeError(f"cannot block images of type {type(images).__name__}")


def replace_image(images, index: int, replacement):
    """`images` with image `index` replaced by the only image of `replacement` (same output type)."""
    if isinstance(images, list):
        images = list(images)
        images[index] = replacement[0]
        return images
    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = images.copy() if isinstance(images, np.ndarray) else images.clone()
        images[index] = replacement[0]
        return images
    raise TypeError(f"cannot replace an image in images of type {type(images).__name__}")
