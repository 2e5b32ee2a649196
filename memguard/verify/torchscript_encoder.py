"""`TorchScriptEncoder`: any image descriptor saved as a TorchScript file, such as SSCD.

SSCD (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022) is the
standard copy descriptor in the memorization literature. Its TorchScript files
(`sscd_disc_mixup.torchscript.pt` and others, from github.com/facebookresearch/sscd-copy-detection)
are under a non-commercial licence (CC BY-NC 4.0): memguard does not ship or download them; bring the
file and check that its licence fits your use.

Preprocessing follows SSCD's README, with ImageNet mean and std:
- `resize="square"`, `size=320` (the default): every image resized to 320x320 ("skew_320"); images of
  any shape batch together.
- `resize="short"`, `size=288`: the shorter side resized to 288, aspect kept ("small_288"); images
  batch with others of the same shape.

The module takes a (N, 3, H, W) float batch and returns (N, D) descriptors; rows are L2-normalized here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .encoders import EncoderError, ImageLike, as_pil, one_line, weights_fingerprint
from .torch_encoding import checked_batch_size, checked_device, encode_batches

TORCHSCRIPT_PREFIX = "torchscript:"
RESIZE_MODES = ("square", "short")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 320
MIN_SIZE = 16


class TorchScriptEncoder:
    """Descriptors of a TorchScript image model (see the module docstring for SSCD)."""

    def __init__(
        self,
        file: str | os.PathLike,
        *,
        size: int = DEFAULT_SIZE,
        resize: str = "square",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "cpu",
        batch_size: int = 32,
    ):
        if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
            raise EncoderError(f"TorchScriptEncoder.size must be an int >= {MIN_SIZE}, got {size!r}")
        if resize not in RESIZE_MODES:
            raise EncoderError(f"TorchScriptEncoder.resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.mean, self.std = _channel_values(mean, "mean"), _channel_values(std, "std")
        if (self.std <= 0).any():
            raise EncoderError(f"TorchScriptEncoder.std must be positive, got {tuple(std)}")
        self.size, self.resize = size, resize
        self.device = checked_device(device, "TorchScriptEncoder")
        self.batch_size = checked_batch_size(batch_size, "TorchScriptEncoder")
        self.file = self._checked_file(file)
        self.module = self._load()
        self.dim = self._probe_dim()
        options = self._options()
        query = "&".join(f"{k}={v}" for k, v in options.items())
        self.name = f"{TORCHSCRIPT_PREFIX}{self.file}" + (f"?{query}" if query else "")
        self.fingerprint = weights_fingerprint(
            self.module.state_dict(), "torchscript", size, resize, self.mean.tolist(), self.std.tolist()
        )

    @staticmethod
    def _checked_file(file) -> str:
        if not isinstance(file, (str, os.PathLike)) or not os.fspath(file).strip():
            raise EncoderError(f"torchscript encoder file must be a path, got {file!r}")
        path = Path(os.fspath(file)).expanduser()
        if not path.is_file():
            raise EncoderError(f"torchscript encoder file {os.fspath(file)!r}: no such file")
        return str(path.resolve())  # the sidecar names it: an index must load from any working directory

    def _load(self):
        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, SSCD ships it
                module = torch.jit.load(self.file, map_location=self.device)
        except Exception as err:  # torch raises RuntimeError, or others for odd archives
            raise EncoderError(
                f"torchscript encoder file {self.file!r}: torch.jit.load cannot read it as TorchScript "
                f"({one_line(err)})"
            ) from None
        return module.eval()

    def _probe_dim(self) -> int:
        """Run one blank image through the module: its output must be one row per image."""
        import torch

        try:
            with torch.inference_mode():
                out = self.module(torch.zeros(1, 3, self.size, self.size, device=self.device))
        except Exception as err:  # the module's own code: anything can come out
            raise EncoderError(
                f"torchscript encoder file {self.file!r}: the module fails on a (1, 3, {self.size}, {self.size}) "
                f"image batch ({one_line(err)})"
            ) from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 1:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise EncoderError(
                f"torchscript encoder file {self.file!r}: the module must return (N, D) descriptors, "
                f"returned {got} for a batch of 1"
            )
        return int(out.shape[1])

    def _options(self) -> dict[str, str]:
        """Options that differ from the defaults, as the spec writes them."""
        options = {}
        if self.size != DEFAULT_SIZE:
            options["size"] = str(self.size)
        if self.resize != "square":
            options["resize"] = self.resize
        if not np.allclose(self.mean, IMAGENET_MEAN):
            options["mean"] = ",".join(repr(float(v)) for v in self.mean)  # exact: the fingerprint has them
        if not np.allclose(self.std, IMAGENET_STD):
            options["std"] = ",".join(repr(float(v)) for v in self.std)  # exact: the fingerprint has them
        return options

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        return encode_batches(images, self.dim, self.batch_size, self._embed_images)

    def _embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        import torch

        pixels = [self._pixels(image) for image in images]
        rows = np.zeros((len(pixels), self.dim), np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, array in enumerate(pixels):  # "short" keeps aspect ratios: only equal shapes stack
            by_shape.setdefault(array.shape, []).append(i)
        for positions in by_shape.values():
            batch = torch.from_numpy(np.stack([pixels[i] for i in positions])).to(self.device)
            rows[positions] = self.module(batch).float().cpu().numpy()
        return rows

    def _pixels(self, image: ImageLike) -> np.ndarray:
        """(3, H, W) float32: resized as configured, scaled to [0, 1], normalized per channel."""
        pil = as_pil(image)
        pil = pil.resize(self._target_size(*pil.size), Image.Resampling.BILINEAR)
        array = (np.asarray(pil, np.float32) / 255 - self.mean) / self.std
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)

    def _target_size(self, width: int, height: int) -> tuple[int, int]:
        if self.resize == "square":
            return self.size, self.size
        # the shorter side to `size`, the longer in proportion (torchvision's Resize(int) rounding)
        if width <= height:
            return self.size, int(self.size * height / width)
        return int(self.size * width / height), self.size

    def __repr__(self) -> str:
        return f"TorchScriptEncoder({self.name!r}, dim={self.dim})"


def _channel_values(values, what: str) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in values], np.float32)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (3,) or not np.isfinite(array).all():
        raise EncoderError(f"TorchScriptEncoder.{what} must be 3 finite numbers (R, G, B), got {values!r}")
    return array
