"""What the torch-model encoders share: checking their arguments, and running a model over images in batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .encoders import EncoderError, ImageLike, l2_normalize


def checked_device(device, owner: str):
    import torch

    try:
        checked = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise EncoderError(f"{owner}.device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    backend = getattr(torch, checked.type, None) if checked.type in ("cuda", "mps", "xpu") else None
    if backend is not None and not backend.is_available():
        raise EncoderError(f"{owner}.device is {device!r}, but this torch has no {checked.type} device available")
    return checked


def checked_batch_size(batch_size, owner: str) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EncoderError(f"{owner}.batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


def encode_batches(
    images: Sequence[ImageLike],
    dim: int,
    batch_size: int,
    embed: Callable[[Sequence[ImageLike]], np.ndarray],
) -> np.ndarray:
    """`embed` over `images` in batches of `batch_size`, without gradients; L2-normalized float32 rows."""
    import torch

    out = [np.zeros((0, dim), np.float32)]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            out.append(embed(images[start : start + batch_size]))
    return l2_normalize(np.concatenate(out))
