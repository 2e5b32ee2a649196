"""Detectors by name: what `GuardConfig(detector="...")` and calibration files refer to."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import MemguardTypeError, MemguardValueError, shown
from .attention import AttentionEntropyDetector, BrightEndingDetector, LateAttentionEntropyDetector
from .base import Detector, score_range
from .bottleneck import BottleneckEntropyDetector, StandardizedBottleneckEntropyDetector
from .noise import HessianDetector, NoiseMagnitudeDetector

DETECTORS: dict[str, Callable[[], Detector]] = {
    "bottleneck_entropy": BottleneckEntropyDetector,  # memguard's own score
    # the same layers, each standardized on the calibration's benign prompts (needs a calibration)
    "bottleneck_entropy_standardized": StandardizedBottleneckEntropyDetector,
    "noise_rms": NoiseMagnitudeDetector,  # Wen et al. 2024
    "jeon_hessian": HessianDetector,  # Jeon et al. 2025
    "ren_entropy": AttentionEntropyDetector,  # Ren et al. 2024, "E"
    "ren_late_entropy": LateAttentionEntropyDetector,  # Ren et al. 2024, "D" (post hoc)
    "bright_ending": BrightEndingDetector,  # Chen et al. 2025 (post hoc)
}

# What `memguard.calibrate` measures by default: memguard's own score (see bottleneck.py).
CALIBRATED_DEFAULT = "bottleneck_entropy"
# Without a calibration or a threshold, only the noise magnitude has a usable model-free threshold.
UNCALIBRATED_DEFAULT = "noise_rms"


def get_detector(detector: Detector | str) -> Detector:
    if isinstance(detector, str):
        if detector not in DETECTORS:
            raise MemguardValueError(f"unknown detector {shown(detector)}; known: {sorted(DETECTORS)}")
        return DETECTORS[detector]()
    for attribute in ("name", "needs", "score"):
        if not hasattr(detector, attribute):
            raise MemguardTypeError(
                f"a detector needs name, needs and score(trace, upto_step); {shown(detector)} has no {attribute}"
            )
    return detector


def known_score_range(name: str) -> tuple[float, float] | None:
    """The score range of the built-in detector called `name`; None for a name memguard does not know."""
    return score_range(DETECTORS[name]()) if name in DETECTORS else None
