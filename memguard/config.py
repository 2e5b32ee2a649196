"""`GuardConfig`: what the operator sets. Thresholds and defaults live in `detection.py`."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .calibration import Calibration
from .detection import UNCALIBRATED_DEFAULT, Detector, default_decision_step, get_detector, is_fittable
from .errors import MemguardTypeError, MemguardValueError, shown
from .intent import ATTRIBUTION_METHODS, AttributionMethod, ImplicitMatcher, IntentRegistry
from .intent.registry import as_registry
from .metrics import GuardMetrics, default_metrics
from .mitigation import DEFAULT_MITIGATION, Mitigation
from .mitigation.base import require_mitigation
from .policy import Policy
from .verify.step import CopyVerification

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ON_ERROR = ("fail_closed", "fail_open")


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """Settings of a guarded pipeline; immutable, so one config can be shared between threads.

    Args:
        enabled: when False the pipeline behaves exactly like its parent (bit-identical images).
        policy: what to do with a memorized image by intent verdict (allow, flag, resample, block),
            how many re-samples, and the fallback (see `memguard.Policy`).
        registry: the operator's intended concepts (`IntentRegistry` or the path of its JSON/YAML
            file); None: no concept is intended, every memorized image is "unintended".
        implicit: an `ImplicitMatcher` for prompts that refer to a concept without naming it.
        mitigation: what a re-sample changes (`memguard.mitigation`); None: the default strategy.
        attribution: how trigger words are found: "attention" (free) or "gradient" (one backward
            pass per memorized image).
        residual_draws: starting noises used to score a prompt with its intended spans replaced by stand-ins
            (one UNet evaluation each; a score of the loop's own steps rolls each out to the decision step).
        detector: the score (a `memguard.detection` detector or its name, e.g. "top_layer_entropy",
            memguard's own, or "noise_rms", Wen et al.). None takes the calibration's detector, or
            "noise_rms" without a calibration (the only score with a model-free default threshold).
        decision_step: the 1-based denoising step at which the detector decides, averaging the
            signals of steps 1..k. None takes the calibration's step, or without a calibration the
            detector's own (8 for "attention_or_updates"; 1 for the others).
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
        on_error: when the guard itself fails (a hook error, a bad signal): "fail_closed" blocks
            every image of the call (black images, action "blocked", status "error"); "fail_open"
            returns the unguarded images with status "error". Both count the error in metrics.
        verification: a `memguard.verify.CopyVerification` (an index of protected or training images
            and a similarity threshold): the finished images are checked against it, the finding goes
            on the report (`copy`), and a copy takes the policy's fallback or is re-sampled again (see
            `CopyVerification`; `memorized` stays the detector's verdict). It needs no calibration, so
            it acts even when the detector only observes. A failed check follows `on_error`.
        act_uncalibrated: without a calibration or an explicit `threshold`, the guard only has a
            model-free default threshold, which means nothing on a real model; it then *observes*:
            it scores, reports (`threshold_source="default"`, outcome "observed" for what it would
            have acted on) and counts, returns the parent's images as drawn (a configured copy
            verification still acts on them), and warns once per
            pipeline with the command that calibrates. True acts on the default threshold anyway.
        act_uncovered: a calibration's false-positive guarantee describes prompts as long as its
            benign prompts (`Calibration.prompt_tokens`); each report says whether its prompt was
            (`calibration_coverage`). True (the default) acts on every prompt alike; False only
            observes the images whose prompt is shorter or longer than every calibration prompt
            (outcome "observed" for what it would have acted on, the image returned as drawn; a
            configured copy verification still acts on it), where a threshold with no guarantee
            would otherwise re-sample or block them.
    """

    enabled: bool = True
    policy: Policy = field(default_factory=Policy)
    registry: IntentRegistry | str | os.PathLike | None = None
    implicit: ImplicitMatcher | None = None
    mitigation: Mitigation | None = None
    attribution: AttributionMethod = "attention"
    residual_draws: int = 8
    detector: Detector | str | None = None
    decision_step: int | None = None
    calibration: Calibration | str | os.PathLike | None = None
    threshold: float | None = None
    attention_layers: tuple[str, ...] | None = None
    record_attention: bool = True
    unconditional_pass: bool = False
    record_all_steps: bool = False
    name: str = "default"
    metrics: GuardMetrics | None = None
    on_error: str = "fail_closed"
    verification: CopyVerification | None = None
    act_uncalibrated: bool = False
    act_uncovered: bool = True

    def __post_init__(self) -> None:
        for name in (
            "enabled",
            "record_attention",
            "unconditional_pass",
            "record_all_steps",
            "act_uncalibrated",
            "act_uncovered",
        ):
            if not isinstance(getattr(self, name), bool):
                raise MemguardTypeError(f"GuardConfig.{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise MemguardValueError(
                f"GuardConfig.name must be 1-64 letters, digits or '_.-' (a metric label), got {self.name!r}"
            )
        if self.metrics is not None and not isinstance(self.metrics, GuardMetrics):
            raise MemguardTypeError(
                f"GuardConfig.metrics must be a memguard.metrics.GuardMetrics, got {type(self.metrics).__name__}"
            )
        if not isinstance(self.policy, Policy):
            raise MemguardTypeError(f"GuardConfig.policy must be a memguard.Policy, got {type(self.policy).__name__}")
        if self.attribution not in ATTRIBUTION_METHODS:
            raise MemguardValueError(
                f"GuardConfig.attribution must be one of {ATTRIBUTION_METHODS}, got {self.attribution!r}"
            )
        if isinstance(self.residual_draws, bool) or not isinstance(self.residual_draws, int) or self.residual_draws < 1:
            raise MemguardValueError(f"GuardConfig.residual_draws must be an int >= 1, got {self.residual_draws!r}")
        if self.mitigation is not None:
            try:
                require_mitigation(self.mitigation, "GuardConfig.mitigation")
            except TypeError as err:
                raise MemguardTypeError(f"{err} (see memguard.mitigation)") from None
        if self.implicit is not None and not isinstance(self.implicit, ImplicitMatcher):
            raise MemguardTypeError(
                f"GuardConfig.implicit must be an ImplicitMatcher, got {type(self.implicit).__name__}"
            )
        if self.registry is not None and not isinstance(self.registry, (IntentRegistry, str, os.PathLike)):
            raise MemguardTypeError(
                "GuardConfig.registry must be an IntentRegistry or the path of a registry file, "
                f"got {type(self.registry).__name__}"
            )
        object.__setattr__(self, "registry", as_registry(self.registry))
        if self.verification is not None and not isinstance(self.verification, CopyVerification):
            raise MemguardTypeError(
                "GuardConfig.verification must be a memguard.verify.CopyVerification, "
                f"got {type(self.verification).__name__}"
            )
        if self.on_error not in ON_ERROR:
            raise MemguardValueError(f"GuardConfig.on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.detector is not None:
            object.__setattr__(self, "detector", get_detector(self.detector))
        if self.decision_step is not None:
            if isinstance(self.decision_step, bool) or not isinstance(self.decision_step, int):
                raise MemguardTypeError(
                    f"GuardConfig.decision_step must be an int, got {type(self.decision_step).__name__}"
                )
            if self.decision_step < 1:
                raise MemguardValueError(f"GuardConfig.decision_step must be >= 1, got {self.decision_step}")
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
                raise MemguardTypeError(f"GuardConfig.threshold must be a float, got {type(self.threshold).__name__}")
            try:
                finite = math.isfinite(self.threshold)
            except OverflowError:  # an int past float's range
                finite = False
            if not finite:
                raise MemguardValueError(f"GuardConfig.threshold must be a finite number, got {shown(self.threshold)}")
        if self.attention_layers is not None:
            layers = self.attention_layers
            if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
                raise MemguardTypeError("GuardConfig.attention_layers must be a sequence of layer names (str)")
            layers = tuple(layers)
            if not all(isinstance(name, str) for name in layers):
                raise MemguardTypeError("GuardConfig.attention_layers must be a sequence of layer names (str)")
            if not layers:
                raise MemguardValueError(
                    "GuardConfig.attention_layers is empty; use None for every cross-attention layer"
                )
            object.__setattr__(self, "attention_layers", layers)
        if self.calibration is not None and not isinstance(self.calibration, Calibration):
            if not isinstance(self.calibration, (str, os.PathLike)):
                raise MemguardTypeError(
                    "GuardConfig.calibration must be a Calibration or a path to a calibration JSON file, "
                    f"got {type(self.calibration).__name__}"
                )
            if not str(self.calibration).strip():
                raise MemguardValueError(
                    "GuardConfig.calibration is an empty path; name a calibration JSON file or pass None"
                )
            object.__setattr__(self, "calibration", Calibration.load(self.calibration))
        if (
            self.calibration is not None
            and self.decision_step is not None
            and self.decision_step != self.calibration.decision_step
        ):
            raise MemguardValueError(
                f"GuardConfig.decision_step={self.decision_step} differs from the calibration's "
                f"decision_step={self.calibration.decision_step}; scores at different steps are not comparable"
            )
        if (
            self.calibration is not None
            and self.detector is not None
            and self.threshold is None
            and self.detector.name != self.calibration.detector
        ):
            raise MemguardValueError(
                f"GuardConfig.detector={self.detector.name!r} differs from the calibration's detector "
                f"{self.calibration.detector!r}; calibrate this detector or pass an explicit threshold"
            )
        if (
            self.calibration is not None
            and self.threshold is None
            and self.detector is not None
            and is_fittable(self.detector)
            and self.detector.fitted
            and self.calibration.fitted_state
            and self.detector.state() != self.calibration.fitted_state
        ):  # the threshold was chosen on the calibration's fit: another fit makes other scores
            raise MemguardValueError(
                f"GuardConfig.detector {self.detector.name!r} is fitted differently from the calibration's "
                "detector_state, whose fit its threshold was chosen on: pass the detector unfitted (the "
                "calibration fits it) or an explicit threshold"
            )
        if getattr(self.effective_detector, "fitted", True) is False:
            raise MemguardValueError(
                f"detector {self.effective_detector.name!r} needs per-layer statistics of benign prompts: "
                "pass a calibration of it (memguard.calibrate(pipe, prompts, detector=...))"
            )

    @property
    def effective_detector(self) -> Detector:
        if self.detector is not None:
            detector = self.detector
        elif self.calibration is not None:
            detector = get_detector(self.calibration.detector)
        else:
            return get_detector(UNCALIBRATED_DEFAULT)
        calibrated = self.calibration is not None and self.calibration.detector == detector.name
        if calibrated and is_fittable(detector) and not detector.fitted and self.calibration.fitted_state:
            return detector.with_state(self.calibration.fitted_state)  # what calibrate() fitted
        return detector

    @property
    def effective_decision_step(self) -> int:
        if self.decision_step is not None:
            return self.decision_step
        if self.calibration is not None:
            return self.calibration.decision_step
        return default_decision_step(self.effective_detector)

    @property
    def effective_mitigation(self) -> Mitigation:
        return self.mitigation if self.mitigation is not None else DEFAULT_MITIGATION

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
        raise MemguardTypeError(f"guard must be a memguard.GuardConfig or None, got {type(config).__name__}")
    return config
