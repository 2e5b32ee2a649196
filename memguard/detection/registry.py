"""Detectors by name: what `GuardConfig(detector="...")` and calibration files refer to."""

from __future__ import annotations

from collections.abc import Callable

from .attention import AttentionEntropyDetector, BrightEndingDetector, LateAttentionEntropyDetector
from .base import Detector
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
            raise ValueError(f"unknown detector {detector!r}; known: {sorted(DETECTORS)}")
        return DETECTORS[detector]()
    for attribute in ("name", "needs", "score"):
        if not hasattr(detector, attribute):
            raise TypeError(
                f"a detector needs name, needs and score(trace, upto_step); {detector!r} has no {attribute}"
            )
    return detector
