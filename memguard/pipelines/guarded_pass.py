"""One guarded call of a Stable Diffusion pipeline: install taps, decide at step k, report.

The parent pipeline's own `__call__` runs unchanged; the guard only adds a chained
`callback_on_step_end` (where it decides, and may stop the loop early) and the signal taps.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..actions import blank_out
from ..calibration import Calibration
from ..config import GuardConfig
from ..detection import DEFAULT_THRESHOLD, Decision, Detector, NoiseMagnitudeDetector, decide
from ..report import GuardedPipelineOutput, MemorizationReport
from ..signals import SignalRecorder, UNetTap, cross_attention_layers

_PARENT_SIGNATURE = inspect.signature(StableDiffusionPipeline.__call__)
# The parent's **kwargs only exists for these deprecated arguments; anything else is a typo that
# diffusers would silently ignore.
_DEPRECATED_KEYWORDS = frozenset({"callback", "callback_steps"})


def bind_call_arguments(pipe, args: tuple, kwargs: dict) -> dict:
    """The parent `__call__`'s arguments by name, defaults filled in (TypeError on an unknown one)."""
    bound = _PARENT_SIGNATURE.bind(pipe, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    extra = arguments.pop("kwargs", {})
    unknown = sorted(set(extra) - _DEPRECATED_KEYWORDS)
    if unknown:
        raise TypeError(f"the pipeline call got unexpected keyword argument(s) {unknown}")
    arguments.update(extra)
    return arguments


def _count_steps(arguments: dict) -> int:
    for name in ("timesteps", "sigmas"):
        if arguments.get(name) is not None:
            return len(arguments[name])
    return int(arguments["num_inference_steps"])


@dataclass(frozen=True)
class Threshold:
    value: float
    source: str  # "config" | "calibration" | "default"


def resolve_threshold(pipe, config: GuardConfig) -> Threshold:
    if config.threshold is not None:
        return Threshold(float(config.threshold), "config")
    if config.calibration is not None:
        _check_calibration_once(pipe, config.calibration)
        return Threshold(config.calibration.threshold, "calibration")
    return Threshold(DEFAULT_THRESHOLD, "default")


def _check_calibration_once(pipe, calibration: Calibration) -> None:
    # Fingerprinting reads every weight tensor's ends; do it once per (pipeline, calibration).
    checked = pipe.__dict__.setdefault("_memguard_checked_calibrations", set())
    key = calibration.model_fingerprint
    if key not in checked:
        calibration.check_model(pipe)
        checked.add(key)


def resolve_attention_layers(unet, config: GuardConfig) -> frozenset[str] | None:
    if not config.record_attention:
        return None
    available = cross_attention_layers(unet)
    if config.attention_layers is None:
        return frozenset(available)
    chosen = set()
    for name in config.attention_layers:
        layer = name[: -len(".processor")] if name.endswith(".processor") else name
        if layer not in available:
            examples = ", ".join(sorted(available)[:3])
            raise ValueError(
                f"GuardConfig.attention_layers: {name!r} is not a cross-attention layer of this UNet "
                f"({len(available)} exist, e.g. {examples})"
            )
        chosen.add(layer)
    return frozenset(chosen)


class GuardedCall:
    """Runs `parent_call` (the unguarded `__call__`) once under the guard."""

    def __init__(
        self,
        pipe,
        config: GuardConfig,
        arguments: dict,
        *,
        detector: Detector | None = None,
        stop_after_decision: bool = False,
    ):
        self.pipe = pipe
        self.config = config
        self.arguments = arguments
        self.detector = detector or NoiseMagnitudeDetector()
        self.stop_after_decision = stop_after_decision
        self.decision_step = config.effective_decision_step
        self.decisions: list[Decision] | None = None
        self.decided_at: int | None = None
        self.summaries: list[dict[str, float]] = []
        self.recorder: SignalRecorder | None = None
        self.threshold: Threshold | None = None
        self._uncond_cache: torch.Tensor | None = None

    # --- validation before anything runs ------------------------------------------------------
    def _validate(self) -> None:
        steps = _count_steps(self.arguments)
        if self.decision_step > steps:
            raise ValueError(f"GuardConfig.decision_step={self.decision_step} is beyond num_inference_steps={steps}")
        calibration = self.config.calibration
        if calibration is not None and self.config.threshold is None:
            differs = []
            if steps != calibration.num_inference_steps:
                differs.append(f"num_inference_steps {steps} vs {calibration.num_inference_steps}")
            if float(self.arguments["guidance_scale"]) != calibration.guidance_scale:
                differs.append(f"guidance_scale {self.arguments['guidance_scale']} vs {calibration.guidance_scale}")
            if differs:
                warnings.warn(
                    "memguard: this call differs from its calibration (" + "; ".join(differs) + "); "
                    "scores may not be comparable with the calibrated threshold",
                    stacklevel=5,  # _validate < _run < run < __call__ < the caller
                )

    # --- the call ------------------------------------------------------------------------------
    def run(self, parent_call: Callable) -> GuardedPipelineOutput | tuple:
        metrics = self.config.effective_metrics
        try:
            output, reports, return_dict = self._run(parent_call)
        except Exception as error:
            metrics.observe_error(self.config.name, error)
            raise
        if not self.stop_after_decision:  # audits score prompts; they generate no images to count
            metrics.observe_call(self.config.name, reports)
        if self.threshold is not None:
            fingerprint = self.config.calibration.model_fingerprint if self.threshold.source == "calibration" else ""
            metrics.observe_threshold(self.config.name, self.threshold.value, self.threshold.source, fingerprint)
        return self._finish(output, reports, return_dict)

    def _run(self, parent_call: Callable) -> tuple[object, list[MemorizationReport], bool]:
        return_dict = self.arguments.pop("return_dict", True)
        if not self.config.enabled:
            output = parent_call(**self.arguments, return_dict=True)
            return output, [self._disabled_report() for _ in range(len(output.images))], return_dict

        self._validate()
        started = time.perf_counter()
        self.threshold = resolve_threshold(self.pipe, self.config)
        unet = self.pipe.unet
        self.recorder = SignalRecorder(
            unet,
            guidance_enabled=lambda: self.pipe.do_classifier_free_guidance,
            record_until_step=None if self.config.record_all_steps else self.decision_step,
            attention_layers=resolve_attention_layers(unet, self.config),
            unconditional_embeds=self._unconditional_embeds if self.config.unconditional_pass else None,
        )
        user_callback = self.arguments.pop("callback_on_step_end")
        tensor_inputs = self.arguments.pop("callback_on_step_end_tensor_inputs")
        if isinstance(user_callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = user_callback.tensor_inputs
        setup_seconds = time.perf_counter() - started

        def on_step_end(pipe, step_index, timestep, callback_kwargs):
            self._on_step_end(pipe, step_index)
            if user_callback is not None:
                return user_callback(pipe, step_index, timestep, callback_kwargs)
            return callback_kwargs

        with UNetTap.recording(unet, self.recorder):
            output = parent_call(
                **self.arguments,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=tensor_inputs,
                return_dict=True,
            )
        finishing = time.perf_counter()
        if self.decisions is None:  # the loop ended before the decision step (interrupted)
            self._decide(len(self.recorder.trace.recorded_steps()))
        reports = self._reports(self.threshold)
        blocked = [i for i, r in enumerate(reports) if r.action == "blocked"]
        if blocked:
            output.images = blank_out(output.images, blocked)
        guard_seconds = setup_seconds + self.recorder.seconds + (time.perf_counter() - finishing)
        for report in reports:
            report.guard_seconds = guard_seconds
        return output, reports, return_dict

    def _on_step_end(self, pipe, step_index: int) -> None:
        start = time.perf_counter()
        self.recorder.step = step_index + 1
        if self.decisions is None and step_index + 1 == self.decision_step:
            self._decide(self.decision_step)
            all_blocked = self.config.action == "block" and all(d.memorized for d in self.decisions)
            if self.stop_after_decision or all_blocked:
                # diffusers' documented way to end the loop from a step callback: the remaining
                # UNet calls are skipped (the VAE decode still runs).
                pipe._interrupt = True
        self.recorder.seconds += time.perf_counter() - start

    def _decide(self, upto_step: int) -> None:
        self.decided_at = upto_step
        self.summaries = self.recorder.trace.summarize(upto_step) if upto_step else []
        self.decisions = [decide(self.detector, s, self.threshold.value) for s in self.summaries]

    def _unconditional_embeds(self, batch: int) -> torch.Tensor:
        cached = self._uncond_cache
        if cached is None:
            args = self.arguments
            device = self.pipe._execution_device
            images_per_prompt = args["num_images_per_prompt"]
            if args.get("negative_prompt_embeds") is not None:
                cached = self.pipe.encode_prompt(
                    None, device, images_per_prompt, False, prompt_embeds=args["negative_prompt_embeds"]
                )[0]
            elif isinstance(args.get("negative_prompt"), list):
                cached = self.pipe.encode_prompt(args["negative_prompt"], device, images_per_prompt, False)[0]
            else:
                cached = self.pipe.encode_prompt(args.get("negative_prompt") or "", device, 1, False)[0]
            self._uncond_cache = cached
        return cached.expand(batch, -1, -1) if cached.shape[0] == 1 else cached

    # --- reports -------------------------------------------------------------------------------
    def _reports(self, threshold: Threshold) -> list[MemorizationReport]:
        unavailable = self.recorder.noise_unavailable_reason
        num_images = self.recorder.num_images or 0
        reports = []
        for i in range(num_images):
            signals = self.summaries[i] if i < len(self.summaries) else {}
            decision = self.decisions[i] if i < len(self.decisions) else Decision(math.nan, False)
            checked = math.isfinite(decision.score)
            report = MemorizationReport(
                score=decision.score,
                threshold=threshold.value,
                memorized=decision.memorized,
                decided_at_step=self.decided_at or 0,
                signals=signals,
                status="checked" if checked else "unavailable",
                detector=self.detector.name,
                threshold_source=threshold.source,
                reason=None if checked else (unavailable or "no denoising step ran before the loop ended"),
            )
            if decision.memorized:
                report.action = "blocked" if self.config.action == "block" else "flagged"
                report.reason = (
                    f"{self.detector.name} score {decision.score:.4g} > threshold {threshold.value:.4g} "
                    f"at step {report.decided_at_step}"
                )
            reports.append(report)
        return reports

    def _disabled_report(self) -> MemorizationReport:
        return MemorizationReport(
            score=math.nan,
            threshold=math.nan,
            memorized=False,
            decided_at_step=0,
            status="disabled",
            reason="GuardConfig(enabled=False)",
        )

    @staticmethod
    def _finish(output, reports: list[MemorizationReport], return_dict: bool):
        if not return_dict:
            return output.images, output.nsfw_content_detected, reports
        return GuardedPipelineOutput(
            images=output.images, nsfw_content_detected=output.nsfw_content_detected, memorization=reports
        )
