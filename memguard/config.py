"""`GuardConfig`: what the operator sets. Thresholds and defaults live in `detection.py`."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from typing import Literal

from .calibration import Calibration
from .metrics import GuardMetrics, default_metrics

Action = Literal["flag", "block"]
ACTIONS: tuple[str, ...] = ("flag", "block")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """Settings of a guarded pipeline; immutable, so one config can be shared between threads.

    Args:
        enabled: when False the pipeline behaves exactly like its parent (bit-identical images).
        action: what to do with an image whose score crosses the threshold: "flag" (report only,
            pixels untouched) or "block" (replace the image by a black placeholder).
        decision_step: the 1-based denoising step at which the detector decides, averaging the
            signals of steps 1..k. None takes the calibration's step, or 1 without a calibration.
        calibration: a `Calibration` or the path of a calibration JSON file (see `memguard.calibrate`).
        threshold: an explicit score threshold; overrides the calibration's.
        attention_layers: names of cross-attention layers to read (as in `unet.attn_processors`,
            with or without the ".processor" suffix); None reads every cross-attention layer.
        record_attention: read cross-attention statistics at all (they feed the report's signals).
        unconditional_pass: with guidance off there is no unconditional branch to compare with; if
            True the guard pays one extra unconditional UNet pass per step up to the decision step.
        record_all_steps: keep signals for every step, not only up to the decision step (research,
            benchmarks); costs attention-probability computations on every step.
        name: the `pipeline` label of this guard's Prometheus metrics (letters, digits, "_.-").
        metrics: where to count; None uses `memguard.metrics.default_metrics()` (the default registry).
    """

    enabled: bool = True
    action: Action = "flag"
    decision_step: int | None = None
    calibration: Calibration | str | os.PathLike | None = None
    threshold: float | None = None
    attention_layers: tuple[str, ...] | None = None
    record_attention: bool = True
    unconditional_pass: bool = False
    record_all_steps: bool = False
    name: str = "default"
    metrics: GuardMetrics | None = None

    def __post_init__(self) -> None:
        for name in ("enabled", "record_attention", "unconditional_pass", "record_all_steps"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"GuardConfig.{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"GuardConfig.name must be 1-64 letters, digits or '_.-' (a metric label), got {self.name!r}"
            )
        if self.metrics is not None and not isinstance(self.metrics, GuardMetrics):
            raise TypeError(
                f"GuardConfig.metrics must be a memguard.metrics.GuardMetrics, got {type(self.metrics).__name__}"
            )
        if self.action not in ACTIONS:
            raise ValueError(f"GuardConfig.action must be one of {ACTIONS}, got {self.action!r}")
        if self.decision_step is not None:
            if isinstance(self.decision_step, bool) or not isinstance(self.decision_step, int):
                raise TypeError(f"GuardConfig.decision_step must be an int, got {type(self.decision_step).__name__}")
            if self.decision_step < 1:
                raise ValueError(f"GuardConfig.decision_step must be >= 1, got {self.decision_step}")
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
                raise TypeError(f"GuardConfig.threshold must be a float, got {type(self.threshold).__name__}")
            if not math.isfinite(self.threshold):
                raise ValueError(f"GuardConfig.threshold must be a finite number, got {self.threshold}")
        if self.attention_layers is not None:
            if isinstance(self.attention_layers, str) or not all(
                isinstance(name, str) for name in self.attention_layers
            ):
                raise TypeError("GuardConfig.attention_layers must be a sequence of layer names (str)")
            if len(self.attention_layers) == 0:
                raise ValueError("GuardConfig.attention_layers is empty; use None for every cross-attention layer")
            object.__setattr__(self, "attention_layers", tuple(self.attention_layers))
        if self.calibration is not None and not isinstance(self.calibration, Calibration):
            if not isinstance(self.calibration, (str, os.PathLike)):
                raise TypeError(
                    "GuardConfig.calibration must be a Calibration or a path to a calibration JSON file, "
                    f"got {type(self.calibration).__name__}"
                )
            object.__setattr__(self, "calibration", Calibration.load(self.calibration))
        if (
            self.calibration is not None
            and self.decision_step is not None
            and self.decision_step != self.calibration.decision_step
        ):
            raise ValueError(
                f"GuardConfig.decision_step={self.decision_step} differs from the calibration's "
                f"decision_step={self.calibration.decision_step}; scores at different steps are not comparable"
            )

    @property
    def effective_decision_step(self) -> int:
        if self.decision_step is not None:
            return self.decision_step
        if self.calibration is not None:
            return self.calibration.decision_step
        return 1

    @property
    def effective_metrics(self) -> GuardMetrics:
        return self.metrics if self.metrics is not None else default_metrics()

    def replace(self, **changes) -> GuardConfig:
        """A copy with some fields changed (the config itself is immutable)."""
        return replace(self, **changes)


def coerce_config(config: GuardConfig | None) -> GuardConfig:
    if config is None:
        return GuardConfig()
    if not isinstance(config, GuardConfig):
        raise TypeError(f"guard must be a memguard.GuardConfig or None, got {type(config).__name__}")
    return config
