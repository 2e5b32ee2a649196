"""Copy verification as the last step of a guarded call (`GuardConfig(verification=...)`).

Detection decides from the first step; this checks the finished pixels against an index of
protected or training images. It is the only check that sees what a mitigation really produced,
so a re-sample that still copies a protected image counts as a failed attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..report import CopyFinding
from .index import VerificationIndex


@dataclass(frozen=True)
class CopyVerification:
    """Check each finished image against `index`; an image whose nearest protected image is at
    least `threshold` similar (cosine, the index encoder's units) is a copy.

    What happens to a copy: a re-sample attempt that copies is retried (or takes the policy's
    fallback on the last attempt); a first generation the detector passed takes the fallback
    ("flag" or "block"); an intended ("allowed") image keeps its action, with the finding reported.
    """

    index: VerificationIndex
    threshold: float

    def __post_init__(self) -> None:
        if not isinstance(self.index, VerificationIndex):
            raise TypeError(
                f"CopyVerification.index must be a memguard.verify.VerificationIndex, got {type(self.index).__name__}"
            )
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"CopyVerification.threshold must be a float, got {type(self.threshold).__name__}")
        if not math.isfinite(self.threshold) or not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"CopyVerification.threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if len(self.index) == 0:
            raise ValueError("CopyVerification.index is empty; build it from the protected images first")

    def check(self, images) -> list[CopyFinding]:
        """One finding per image of a pipeline output (PIL list, (N, H, W, 3) array or (N, 3, H, W) tensor)."""
        checks = self.index.check(as_image_list(images), self.threshold)
        return [
            CopyFinding(check.top.id, check.top.similarity, check.copied) if check.top else CopyFinding("", -1.0, False)
            for check in checks
        ]


def as_image_list(images) -> list:
    """A pipeline's decoded output as a list the encoders read (PIL images or (H, W, 3) arrays)."""
    if isinstance(images, list):
        return images
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3:
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return list(images.detach().float().cpu().permute(0, 2, 3, 1).numpy())
    raise TypeError(
        "copy verification needs decoded RGB images (output_type 'pil', 'np' or 'pt'), "
        f"got {type(images).__name__} of shape {tuple(getattr(images, 'shape', ()))}"
    )
