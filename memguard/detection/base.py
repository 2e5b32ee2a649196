"""The detector interface: from a call's `SignalTrace` to one memorization score per image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from ..signals import SignalNeeds, SignalTrace
from ..signals.trace import entropy

__all__ = [
    "UNBOUNDED",
    "LayerStats",
    "benign_stats",
    "Decision",
    "Detector",
    "FittableDetector",
    "is_fittable",
    "decide",
    "default_decision_step",
    "entropy",
    "fit_layer_stats",
    "mean_over_steps",
    "read_layer_stats",
    "score_range",
    "standardize_layers",
    "steps_upto",
    "stored_stats",
    "unavailable",
]

# The score range of a detector that declares none: any finite threshold may make sense.
UNBOUNDED: tuple[float, float] = (-math.inf, math.inf)


class Detector(Protocol):
    """Scores every image of one call; higher means more likely memorized.

    `needs` tells the recorder what to read; `default_threshold` is the uncalibrated guess used when
    the operator gives neither a calibration nor a threshold (None: this detector needs one).
    `score_range` (optional; `UNBOUNDED` when absent) is [low, high] of the scores it can give: a
    calibration file whose threshold lies outside it is refused (it would flag all or nothing).
    `decision_step` (optional; 1 when absent) is the step it decides at when neither the operator nor
    a calibration says.
    """

    name: str
    needs: SignalNeeds
    default_threshold: float | None
    score_range: ClassVar[tuple[float, float]]

    def score(self, trace: SignalTrace, upto_step: int) -> torch.Tensor:
        """(N,) float scores from the steps 0..upto_step-1 of `trace` (NaN where a signal is missing)."""
        ...


class FittableDetector(Detector, Protocol):
    """A detector fitted on the model's own benign prompts (by `memguard.calibrate`), whose fitted
    parameters are saved in the calibration and restored when it is loaded.

    - `features(trace, upto_step)`: per image, the named values the fit needs ({name: (N,) tensor});
      None when a signal was not recorded;
    - `fit(features)`: the fitted detector from every benign image's features (each (n,), concatenated);
    - `score_features(features)`: a fitted detector's scores of already-read features;
    - `state()` / `with_state(state)`: the fitted parameters as a JSON object, and a detector from them;
    - `fitted`: False until it has its parameters (it refuses to score without them).
    """

    fitted: bool

    def features(self, trace: SignalTrace, upto_step: int) -> dict[str, torch.Tensor] | None: ...

    def fit(self, features: dict[str, torch.Tensor]) -> FittableDetector: ...

    def score_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def state(self) -> dict: ...

    def with_state(self, state: dict) -> FittableDetector: ...


def is_fittable(detector) -> bool:
    return all(callable(getattr(detector, name, None)) for name in ("features", "fit", "state", "with_state"))


@dataclass(frozen=True)
class Decision:
    score: float
    memorized: bool


def score_range(detector) -> tuple[float, float]:
    """[low, high] of the scores `detector` can give (`UNBOUNDED` when it declares none)."""
    return getattr(detector, "score_range", UNBOUNDED)


def default_decision_step(detector) -> int:
    """The step `detector` is meant to decide at when nobody says (its optional `decision_step`), else 1."""
    step = getattr(detector, "decision_step", 1)
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 1 else 1


def decide(scores: torch.Tensor, threshold: float) -> list[Decision]:
    """Memorized means strictly above the threshold; a NaN score is never memorized (reported unavailable)."""
    decisions = []
    for value in scores.detach().cpu().tolist():
        decisions.append(Decision(value, bool(math.isfinite(value) and value > threshold)))
    return decisions


def steps_upto(trace: SignalTrace, upto_step: int, attribute: str) -> list[int]:
    """The recorded steps < upto_step that carry `attribute`."""
    return [s for s in range(upto_step) if s in trace.steps and getattr(trace.steps[s], attribute) is not None]


def mean_over_steps(trace: SignalTrace, upto_step: int, attribute: str) -> torch.Tensor | None:
    steps = steps_upto(trace, upto_step, attribute)
    if not steps:
        return None
    return torch.stack([getattr(trace.steps[s], attribute).float() for s in steps]).mean(dim=0).cpu()


def unavailable(trace: SignalTrace) -> torch.Tensor:
    return torch.full((trace.num_images,), math.nan)


def score_fitted(detector, trace: SignalTrace, upto_step: int, needs: str) -> torch.Tensor:
    """A `FittableDetector`'s scores of a trace: refused until fitted (`needs` names what it lacks), NaN
    where a signal was not recorded, else `score_features` of its features."""
    if not detector.fitted:
        raise ValueError(
            f"detector {detector.name!r} needs {needs} of benign prompts: calibrate it "
            f"(memguard.calibrate(pipe, prompts, detector={detector.name!r})) and pass that calibration"
        )
    values = detector.features(trace, upto_step)
    if values is None:
        return unavailable(trace)
    return detector.score_features(values)


def benign_stats(values: torch.Tensor, what: str) -> tuple[float, float]:
    """(mean, std) of a feature over the benign calibration images, in float64; refuses a feature
    every benign prompt gives the same value (nothing to standardize by)."""
    values = values.double()
    mean, spread = float(values.mean()), float(values.std())
    if not spread > 0 or not math.isfinite(mean):
        raise ValueError(f"calibration: {what} scores every benign prompt the same; pass varied prompts")
    return mean, spread


def stored_stats(value, what: str) -> tuple[float, float]:
    """A [mean, std] read back from a calibration: two finite numbers (not bools), std > 0."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{what} must be [mean, std], two numbers")
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in value):
        raise ValueError(f"{what} must be [mean, std], two finite numbers")
    mean, spread = float(value[0]), float(value[1])
    if not spread > 0:
        raise ValueError(f"{what}: the spread must be > 0, got {spread}")
    return mean, spread


# Per-layer statistics of the fitted attention scores (top_layers.py, combined.py): one tuple
# (layer, benign mean, benign std) per cross-attention layer, sorted by layer name.
LayerStats = tuple[tuple[str, float, float], ...]


def fit_layer_stats(features: dict[str, torch.Tensor], layers: list[str]) -> LayerStats:
    """Each layer's benign (mean, std) of its feature (`benign_stats`), in the order of `layers`."""
    return tuple((k, *benign_stats(features[k], f"layer {k!r}")) for k in layers)


def read_layer_stats(state, detector_name: str) -> LayerStats:
    """A calibration's stored `layer_stats` ({layer: [mean, std]}), checked strictly and sorted."""
    if not isinstance(state, dict) or not isinstance(state.get("layer_stats"), dict) or not state["layer_stats"]:
        raise ValueError(f"calibration of {detector_name!r} holds no layer_stats; re-run memguard.calibrate")
    layers = []
    for layer, pair in state["layer_stats"].items():
        if not isinstance(layer, str):
            raise ValueError(f"calibration of {detector_name!r}: layer_stats keys must be layer names")
        layers.append((layer, *stored_stats(pair, f"calibration of {detector_name!r}: layer_stats[{layer!r}]")))
    return tuple(sorted(layers))


def standardize_layers(layer_stats: LayerStats, features: dict[str, torch.Tensor], detector_name: str) -> torch.Tensor:
    """(layers, N): each layer's feature as a z-score against the benign statistics, layers sorted by
    name; refused when the recorded layers are not exactly the calibrated ones (another model)."""
    stats = {layer: (mean, spread) for layer, mean, spread in layer_stats}
    layers = sorted(features)
    if sorted(stats) != layers:
        raise ValueError(
            f"detector {detector_name!r}: the model's cross-attention layers differ from the calibration's "
            f"({len(layers)} per-layer features recorded, {len(stats)} calibrated); calibrate this model"
        )
    # in float64, as the fit computes them: a small benign spread magnifies rounding
    return torch.stack([(features[k].double() - stats[k][0]) / stats[k][1] for k in layers])
