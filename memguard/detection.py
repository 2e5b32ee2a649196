"""Detection: from the signals of the first k steps to one memorization score per image.

To change the score, add a `Detector` here; to change the uncalibrated threshold, edit
`DEFAULT_THRESHOLD`. Calibrated thresholds come from `memguard.calibrate` (see calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# Uncalibrated default for the "noise_rms" score: the per-element RMS of eps(x_t, prompt) -
# eps(x_t, "") averaged over the first k steps. A rough, resolution-free guess that every operator
# should replace with `memguard.calibrate` on their own model's benign prompts; reports made with it
# say threshold_source="default".
DEFAULT_THRESHOLD = 0.2


class Detector(Protocol):
    """Scores one image from its summarized signals (see `SignalTrace.summarize`)."""

    name: str

    def score(self, signals: dict[str, float]) -> float: ...


@dataclass(frozen=True)
class NoiseMagnitudeDetector:
    """Wen et al. 2024: the magnitude of the text-conditional noise prediction, here as a per-element
    RMS so the score does not grow with the latent resolution. NaN when the signal is unavailable."""

    name: str = "noise_rms"

    def score(self, signals: dict[str, float]) -> float:
        return signals.get("noise_rms", math.nan)


@dataclass(frozen=True)
class Decision:
    score: float
    memorized: bool


def decide(detector: Detector, signals: dict[str, float], threshold: float) -> Decision:
    score = detector.score(signals)
    return Decision(score=score, memorized=bool(math.isfinite(score) and score > threshold))
