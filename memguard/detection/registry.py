"""Detectors by name: what `GuardConfig(detector="...")` and calibration files refer to.

`register_detector(name, factory)` adds your own: a calibration names its detector, so a registered
detector can be calibrated, saved and loaded by name like the built-in ones (register it before
loading its calibration). A detector that needs fitting on benign prompts implements
`memguard.detection.FittableDetector`; `memguard.calibrate` fits it and stores its state.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import MemguardTypeError, MemguardValueError, shown
from .attention import AttentionEntropyDetector, BrightEndingDetector, LateAttentionEntropyDetector
from .base import Detector, is_fittable, score_range
from .bottleneck import BottleneckEntropyDetector, StandardizedBottleneckEntropyDetector
from .combined import AttentionNoiseDetector
from .noise import AnisotropyDetector, HessianDetector, NoiseMagnitudeDetector
from .spread import AttentionSpreadDetector
from .top_layers import TopLayerEntropyDetector
from .trajectory import LatentUpdateDetector
from .two_stage import AttentionOrUpdatesDetector

DETECTORS: dict[str, Callable[[], Detector]] = {
    # memguard's calibrated default: the most raised layers' standardized attention entropy (top_layers.py)
    "top_layer_entropy": TopLayerEntropyDetector,
    # the same with each layer's mean per-query entropy beside it: more reworded copies caught, more
    # one-word prompts flagged on the testbeds (spread.py)
    "attention_spread": AttentionSpreadDetector,
    # every layer's attention entropy plus the noise magnitude, standardized on benign prompts (combined.py)
    "attention_noise": AttentionNoiseDetector,
    # the same attention at step 1, or the latent-update size over steps 1-8, each on its benign tail's
    # scale: also sees memorized captions in everyday words, which attention misses (two_stage.py)
    "attention_or_updates": AttentionOrUpdatesDetector,
    "bottleneck_entropy": BottleneckEntropyDetector,  # memguard's first score: needs no fit
    # the same layers, each standardized on the calibration's benign prompts (needs a calibration)
    "bottleneck_entropy_standardized": StandardizedBottleneckEntropyDetector,
    "noise_rms": NoiseMagnitudeDetector,  # Wen et al. 2024
    "jeon_hessian": HessianDetector,  # Jeon et al. 2025
    "anisotropy": AnisotropyDetector,  # Asthana & Belagiannis 2026 (SD 1.4's weights)
    "broken_memories": LatentUpdateDetector,  # Huang et al. 2026
    "ren_entropy": AttentionEntropyDetector,  # Ren et al. 2024, "E"
    "ren_late_entropy": LateAttentionEntropyDetector,  # Ren et al. 2024, "D" (post hoc)
    "bright_ending": BrightEndingDetector,  # Chen et al. 2025 (post hoc)
}

# What `memguard.calibrate` measures by default: memguard's own score (see top_layers.py).
CALIBRATED_DEFAULT = "top_layer_entropy"
# Without a calibration or a threshold, only the noise magnitude has a usable model-free threshold.
UNCALIBRATED_DEFAULT = "noise_rms"


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def register_detector(name: str, factory: Callable[[], Detector], *, replace: bool = False) -> None:
    """Make `factory()` (a detector whose `name` is `name`) available by name, to GuardConfig,
    `memguard.calibrate` and calibration files. Refuses a name already taken unless `replace`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MemguardValueError(f"a detector name must be 1-64 letters, digits or '_.-', got {shown(name)}")
    if not callable(factory):
        raise MemguardTypeError(f"register_detector needs a factory (a class or function), got {shown(factory)}")
    if name in DETECTORS and not replace:
        raise MemguardValueError(f"a detector called {name!r} is registered already; pass replace=True")
    made = get_detector(factory())
    if made.name != name:
        raise MemguardValueError(f"the factory makes a detector called {made.name!r}, not {name!r}")
    DETECTORS[name] = factory


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


def state_problem(name: str, state: dict) -> str | None:
    """Why a registered fittable detector cannot restore `state` (a calibration's `detector_state`), or
    None when it can, or when `name` is no fittable detector registered here (it is checked where it is
    used)."""
    factory = DETECTORS.get(name)
    if factory is None:
        return None
    detector = factory()
    if not is_fittable(detector):
        return None
    try:
        detector.with_state(state)
    except Exception as err:  # a detector of one's own may raise anything on a state it cannot read
        return str(err) or type(err).__name__
    return None


def known_score_range(name: str) -> tuple[float, float] | None:
    """The score range of the built-in detector called `name`; None for a name memguard does not know."""
    return score_range(DETECTORS[name]()) if name in DETECTORS else None
