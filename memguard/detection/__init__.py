"""Detection: from the signals of a call to one memorization score per image.

Each detector is a small dataclass with `name`, `needs` (the signals it reads) and `score(trace,
upto_step)`. memguard's own scores are in `top_layers.py` (the calibrated default: the attention
entropy of the layers that rise most, fitted on benign prompts), `spread.py` (the same with each
layer's mean per-query entropy beside it, opt-in), `bottleneck.py` (the bottleneck's
raw attention entropy, no fit), `combined.py` (every layer's attention entropy plus the noise
magnitude, fitted) and `two_stage.py` (the top layers' attention at step 1 or the latent updates to
step 8, fitted: also sees memorized captions in everyday words); the published baselines,
re-implemented from their papers, are in `noise.py` (Wen, Jeon, Asthana), `attention.py` (Ren, Chen)
and `trajectory.py` (Huang). The guard's detector is
`GuardConfig.detector`; calibrated thresholds come from `memguard.calibrate` (calibration.py).
"""

from .attention import AttentionEntropyDetector, BrightEndingDetector, LateAttentionEntropyDetector
from .base import Decision, Detector, FittableDetector, decide, default_decision_step, is_fittable
from .bottleneck import BottleneckEntropyDetector, StandardizedBottleneckEntropyDetector
from .combined import AttentionNoiseDetector
from .noise import DEFAULT_THRESHOLD, AnisotropyDetector, HessianDetector, NoiseMagnitudeDetector
from .record import record_trace
from .registry import CALIBRATED_DEFAULT, DETECTORS, UNCALIBRATED_DEFAULT, get_detector, register_detector
from .spread import AttentionSpreadDetector
from .top_layers import TopLayerEntropyDetector
from .trajectory import LatentUpdateDetector
from .two_stage import AttentionOrUpdatesDetector

__all__ = [
    "CALIBRATED_DEFAULT",
    "DEFAULT_THRESHOLD",
    "DETECTORS",
    "UNCALIBRATED_DEFAULT",
    "AnisotropyDetector",
    "AttentionNoiseDetector",
    "AttentionOrUpdatesDetector",
    "AttentionSpreadDetector",
    "AttentionEntropyDetector",
    "BottleneckEntropyDetector",
    "BrightEndingDetector",
    "Decision",
    "Detector",
    "FittableDetector",
    "HessianDetector",
    "LateAttentionEntropyDetector",
    "LatentUpdateDetector",
    "NoiseMagnitudeDetector",
    "StandardizedBottleneckEntropyDetector",
    "TopLayerEntropyDetector",
    "decide",
    "default_decision_step",
    "get_detector",
    "is_fittable",
    "record_trace",
    "register_detector",
]
