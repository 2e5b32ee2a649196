"""Copy verification as the last step of a guarded call (`GuardConfig(verification=...)`).

Detection decides from the first step; this checks the finished pixels against an index of
protected or training images. It is the only check that sees what a mitigation really produced,
so a re-sample that still copies a protected image counts as a failed attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..calibration import threshold_for_fpr
from ..errors import MemguardTypeError, MemguardValueError
from ..report import CopyFinding
from .index import VerificationIndex, checked_threshold


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
            raise MemguardTypeError(
                f"CopyVerification.index must be a memguard.verify.VerificationIndex, got {type(self.index).__name__}"
            )
        # NumPy floats accepted (np.quantile of float32 similarities returns one), stored as a float
        object.__setattr__(self, "threshold", checked_threshold(self.threshold, "CopyVerification.threshold"))
        if len(self.index) == 0:
            raise MemguardValueError("CopyVerification.index is empty; build it from the protected images first")

    @classmethod
    def from_file(cls, path, threshold: float, encoder=None, *, device: str = "cpu") -> CopyVerification:
        """Load the index at `path` (see `VerificationIndex.load`; `encoder`: an encoder or its spec,
        by default the one that built the index) and check against it at `threshold`."""
        return cls(VerificationIndex.load(path, encoder, device=device), threshold)

    def check(self, images) -> list[CopyFinding]:
        """One finding per image of a pipeline output (PIL list, (N, H, W, 3) array or (N, 3, H, W) tensor)."""
        checks = self.index.check(as_image_list(images), self.threshold)
        return [
            CopyFinding(check.top.id, check.top.similarity, check.copied) if check.top else CopyFinding("", -1.0, False)
            for check in checks
        ]


def calibrate_copy_threshold(index: VerificationIndex, benign_images, target_fpr: float = 0.01) -> float:
    """The lowest copy threshold that at most `target_fpr` of `benign_images` reach.

    Pass generations of benign prompts from the guarded model, made apart from what you evaluate.
    A threshold guessed by eye can sit inside the benign range and turn re-samples into false copies.
    Needs at least 1 / target_fpr images.
    """
    images = as_image_list(benign_images)
    similarities = [matches[0].similarity if matches else -1.0 for matches in index.search(images, k=1)]
    threshold, _ = threshold_for_fpr(similarities, target_fpr)
    # A copy is similarity >= threshold, so step just past the benign value left at the limit.
    return float(min(1.0, np.nextafter(np.float32(threshold), np.float32(np.inf))))


def as_image_list(images) -> list:
    """A pipeline's decoded output as a list the encoders read (PIL images or (H, W, 3) arrays)."""
    if isinstance(images, list):
        return images
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3:
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return list(images.detach().float().cpu().permute(0, 2, 3, 1).numpy())
    raise MemguardTypeError(
        "copy verification needs decoded RGB images (output_type 'pil', 'np' or 'pt'), "
        f"got {type(images).__name__} of shape {tuple(getattr(images, 'shape', ()))}"
    )
