"""What every image encoder of the copy-verification index shares, and the offline pixel encoder.

An encoder turns images into L2-normalized float32 rows, so inner product is cosine similarity. It has
- `name`: the spec that rebuilds it (`memguard.verify.encoder_from_name`), stored in the index's sidecar;
- `fingerprint`: a short hash of what decides its embeddings (weights, preprocessing, options), also
  stored, so an index is never searched with embeddings of another encoder, even one loaded from the
  same path after the model there changed.

The encoders (see docs/verification.md for how to choose one):
- `PixelEncoder` (`pixel-32`): the image resized to 32x32, centred and L2-normalized, so inner product
  is the Pearson correlation of pixels. Needs nothing; it only recognizes near-pixel-exact copies,
  which is what the 32x32 testbed produces. For the testbed and tests, not for real models.
- `DinoV2Encoder`, `ClipVisionEncoder` (`dinov2:`, `clip:`; `transformers_encoders.py`).
- `TorchScriptEncoder` (`torchscript:`, e.g. SSCD; `torchscript_encoder.py`).
- `OpenClipEncoder` (`open_clip:`; needs open_clip_torch and torchvision; `open_clip_encoder.py`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

ImageLike = str | os.PathLike | Image.Image | np.ndarray

PIXEL_PREFIX = "pixel-"
UNIT_TOLERANCE = 1e-3  # float images a little outside [0, 1] (a decoder's rounding) are clipped


class EncoderError(ValueError):
    """An encoder cannot be built: a bad spec or argument, a missing or unreadable model, a missing package.

    The message is one line and names the argument (the spec, or the encoder's parameter)."""


class ImageEncoder(Protocol):
    name: str
    dim: int
    fingerprint: str  # optional for encoders of your own: `name` stands in for it when absent

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(len(images), dim) float32, rows L2-normalized (a zero row for a blank image)."""
        ...


def encoder_fingerprint(encoder: ImageEncoder) -> str:
    return getattr(encoder, "fingerprint", None) or encoder.name


def as_pil(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an array (see `as_unit_array`). Files are turned
    upright by their EXIF orientation (as a viewer shows them); 16-bit images keep their tones."""
    if isinstance(image, np.ndarray):
        return Image.fromarray((as_unit_array(image) * 255).round().astype(np.uint8)).convert("RGB")
    if isinstance(image, Image.Image):
        return _rgb(image)
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(
            f"an image must be a path, a PIL image or a NumPy array, got {type(image).__name__} "
            "(a torch tensor: .permute(1, 2, 0).cpu().numpy(), values in 0-1)"
        )
    try:
        with Image.open(Path(image)) as opened:
            return _rgb(ImageOps.exif_transpose(opened))
    except Image.DecompressionBombError:  # neither OSError nor ValueError
        raise ValueError(
            f"cannot read image {image}: more pixels than Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,}); shrink it, or raise that limit"
        ) from None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {image}: {err}") from None


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: RGB conversion would clip at 255
        grey = np.asarray(image, np.float64)
        return Image.fromarray((np.clip(grey, 0, 65535) / 257).round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def as_unit_array(image: np.ndarray) -> np.ndarray:
    """An image array as float32 values in [0, 1]: uint8 (0-255), uint16 (0-65535) or float in [0, 1],
    shaped (H, W), (H, W, 3) or (H, W, 4) (alpha dropped). Other dtypes, shapes or ranges are refused:
    read another way they would encode as a different picture and silently miss every copy."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.ndim == 3:
        image = image[..., :3] if image.shape[-1] != 1 else image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"an image array must be uint8 (0-255), uint16 (0-65535) or float (0-1), got {image.dtype}")
    array = image.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("an image array has NaN or infinite values")
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low < -UNIT_TOLERANCE or high > 1 + UNIT_TOLERANCE:
        raise ValueError(
            f"a float image array is read as 0-1, got values from {low:g} to {high:g} "
            "(for 0-255 values pass uint8, or divide by 255)"
        )
    return np.clip(array, 0, 1)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def weights_fingerprint(state_dict, *settings: object) -> str:
    """A short, stable hash of a module's weights (names, shapes and the head and tail of every tensor)
    and of `settings` (preprocessing, options): cheap for large models, yet another checkpoint, or a
    fine-tuned one, changes it. The same scheme as `memguard.calibration.model_fingerprint`."""
    import torch

    digest = hashlib.sha256(repr(settings).encode())
    for name, tensor in state_dict.items():
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:16], flat[-16:]]).to(device="cpu", dtype=torch.float32)
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def one_line(err: BaseException) -> str:
    """The first line of a library's error message (some span pages), or its type when it has none."""
    lines = str(err).strip().splitlines()
    line = lines[0].strip() if lines else type(err).__name__
    if len(line) > 160 and ". " in line:  # torch appends paragraphs of advice to the one sentence that matters
        line = line.split(". ", 1)[0]
    return line


class PixelEncoder:
    """Pixels as the embedding (testbed and tests only; see the module docstring)."""

    def __init__(self, size: int = 32):
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise EncoderError(f"PixelEncoder.size must be an int >= 2, got {size!r}")
        self.size = size
        self.name = f"{PIXEL_PREFIX}{size}"
        self.fingerprint = self.name  # nothing but the size decides its rows
        self.dim = size * size * 3

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        rows = np.stack([self._pixels(image) for image in images])
        rows -= rows.mean(axis=1, keepdims=True)  # centred: a correlation, not "both mostly bright"
        return l2_normalize(rows)

    def _pixels(self, image: ImageLike) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.shape == (self.size, self.size, 3):
            return as_unit_array(image).reshape(-1)  # already at size: skip the PIL round trip (the hot path)
        pil = as_pil(image)
        if pil.size != (self.size, self.size):
            pil = pil.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return (np.asarray(pil, np.float32) / 255).reshape(-1)


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
