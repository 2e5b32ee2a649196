"""One guarded call: the caller's generation, then a re-sample for each image whose verdict asks
for one, with the configured mitigation, until it passes or `Policy.max_attempts` is spent.

Each generation is a `GuardedPass` (guarded_pass.py). The caller's generation is the parent's call
with the caller's own arguments (generator included), so an image the guard does not act on is the
parent's image bit for bit, and the caller's generator advances exactly as the parent advances it.
A re-sample runs one image alone with a generator of its own; it stops at the decision step when it
is still memorized and attempts remain, so a failed attempt costs k steps.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from ..actions import blank_out, replace_image
from ..config import GuardConfig
from ..detection import Detector, NoiseMagnitudeDetector
from ..errors import MemguardError, MemguardValueError
from ..mitigation import MitigationContext, ResamplePlan, derive_seed, fresh_noise
from ..privacy import guarded_logging, pipeline_loggers, redacted_error
from ..report import Attempt, MemorizationReport
from ..verify.step import as_image_list
from .families import Family
from .guarded_pass import REPORT_ACTION, GuardedPass, PassResult, disabled_report
from .outputs import parent_fields

__all__ = ["GuardedCall"]

logger = logging.getLogger(__name__)


class GuardedCall:
    """Runs `parent_call` (the unguarded `__call__`) under the guard, re-sampling as the policy says."""

    def __init__(
        self,
        pipe,
        family: Family,
        config: GuardConfig,
        arguments: dict,
        *,
        detector: Detector | None = None,
        stop_after_decision: bool = False,
    ):
        self.pipe = pipe
        self.family = family
        self.config = config
        self.arguments = arguments
        self.detector = detector
        self.stop_after_decision = stop_after_decision
        self._pipeline_errors: set[int] = set()  # errors that came out of the parent's call

    def _parent(self, parent_call: Callable) -> Callable:
        """`parent_call`, marking what it raises as the pipeline's (or the caller's code's), not the guard's."""

        def call(**kwargs):
            try:
                return parent_call(**kwargs)
            except Exception as error:
                self._pipeline_errors.add(id(error))
                raise

        return call

    def run(self, parent_call: Callable) -> tuple[object, list[MemorizationReport]]:
        """(the output, as `family.output_class` with the reports on it, and the reports)."""
        metrics = self.config.effective_metrics
        secrets = self.family.prompt_strings(self.arguments)
        try:
            with guarded_logging(pipeline_loggers(self.pipe), secrets):
                output, reports, threshold = self._run(self._parent(parent_call))
        except Exception as error:
            from_pipeline = id(error) in self._pipeline_errors
            observe = metrics.observe_pipeline_error if from_pipeline else metrics.observe_guard_error
            self._count(observe, self.config.name, error)
            clean = redacted_error(error, secrets)
            if clean is not None:  # the pipeline (or the caller's code) quoted a prompt
                raise clean.with_traceback(error.__traceback__) from None
            raise
        if not self.stop_after_decision:  # audits score prompts; they generate no images to count
            self._count(metrics.observe_call, self.config.name, reports)
        if threshold is not None:
            fingerprint = self.config.calibration.model_fingerprint if threshold.source == "calibration" else ""
            self._count(metrics.observe_threshold, self.config.name, threshold.value, threshold.source, fingerprint)
        result = self.family.output_class(
            **{name: getattr(output, name, None) for name in parent_fields(self.family.output_class)},
            memorization=reports,
        )
        return result, reports

    @staticmethod
    def _count(observe, *args) -> None:
        """Metrics never cost the caller the images: a failing metrics layer is logged, not raised."""
        try:
            observe(*args)
        except Exception as error:
            logger.warning(
                "memguard: recording metrics failed (%s); the call's result is returned", type(error).__name__
            )

    def _run(self, parent_call: Callable):
        arguments = dict(self.arguments)
        arguments.pop("return_dict", None)
        if not self.config.enabled:
            output = parent_call(**arguments, return_dict=True)
            return output, [disabled_report() for _ in range(len(output.images))], None
        verification = None if self.stop_after_decision else self.config.verification
        resamples = self.config.policy.resamples and not self.stop_after_decision
        try:
            if verification is not None and arguments.get("output_type") == "latent":
                raise MemguardValueError(
                    "GuardConfig.verification checks decoded images; output_type='latent' cannot be verified "
                    "(use 'pil', 'np' or 'pt', or a config without verification)"
                )
            first = GuardedPass(
                self.pipe,
                self.family,
                self.config,
                arguments,
                detector=self.detector,
                stop_after_decision=self.stop_after_decision,
                keep_inputs=resamples,
            )
            first.validate()
        except MemguardError as error:  # the call's arguments (or a config they cannot run with): not a guard fault
            self._pipeline_errors.add(id(error))
            raise
        result = first.run(parent_call)
        if first.observing and not self.stop_after_decision:
            _warn_uncalibrated_once(self.pipe, first.threshold.value)
        output, reports = result.output, result.reports
        if result.failure is not None:
            self._count(self.config.effective_metrics.observe_guard_error, self.config.name, result.failure)
        extra_seconds = 0.0
        for image, action in enumerate(result.actions):
            if action != "retry":
                continue
            t0 = time.perf_counter()
            try:
                final_output, report = self._resample(parent_call, arguments, first, result, image)
            except Exception as error:  # the guard's own failure while re-sampling
                if id(error) in self._pipeline_errors:  # the pipeline's or the caller's callback's: it propagates
                    raise
                self._count(self.config.effective_metrics.observe_guard_error, self.config.name, error)
                reports[image] = self._failed_resample_report(first, result, image, error)
                continue
            finally:
                extra_seconds += time.perf_counter() - t0
            _replace_image(output, image, final_output)
            reports[image] = report
        if verification is not None:
            t0 = time.perf_counter()
            try:
                self._verify_kept_images(verification, output.images, reports)
            except Exception as error:  # the guard's own failure: GuardConfig.on_error decides, as in the loop
                self._count(self.config.effective_metrics.observe_guard_error, self.config.name, error)
                self._copy_check_failed(reports, error)
            finally:
                extra_seconds += time.perf_counter() - t0
        blocked = [i for i, r in enumerate(reports) if r.action == "blocked"]
        if blocked:
            output.images = blank_out(output.images, blocked)
        # The guard's own time: its taps and decisions, every re-sample (mitigation included), copy checks.
        guard_seconds = result.guard_seconds + extra_seconds
        for report in reports:
            report.guard_seconds = guard_seconds
        return output, reports, first.threshold

    def _verify_kept_images(self, verification, images, reports: list[MemorizationReport]) -> None:
        """Copy-check the images the detector let through (re-samples were checked per attempt)."""
        kept = _unchecked_kept_images(reports)
        if not kept:
            return
        decoded = as_image_list(images)
        findings = verification.check([decoded[i] for i in kept])
        for i, finding in zip(kept, findings, strict=True):
            report = reports[i]
            report.copy = finding
            if finding.copied and report.action != "allowed":  # intended images stay allowed
                report.action = REPORT_ACTION[self.config.policy.fallback]
                report.reason = (
                    f"copy verification: similarity {finding.similarity:.4f} to a protected image "
                    f">= {verification.threshold:.4f}; fallback {self.config.policy.fallback}"
                )

    def _copy_check_failed(self, reports: list[MemorizationReport], error: BaseException) -> None:
        """The images whose copy check failed: status "error"; fail_closed blocks them, fail_open
        returns them with the detector's decision. Only the error's type is kept (see `error_report`)."""
        closed = self.config.on_error == "fail_closed"
        for i in _unchecked_kept_images(reports):
            report = reports[i]
            report.status = "error"
            if closed:
                report.action = "blocked"
            report.reason = f"copy verification error ({type(error).__name__}); on_error={self.config.on_error}"

    def _failed_resample_report(self, first: GuardedPass, result: PassResult, image: int, error: BaseException):
        """fail_open returns the first image, flagged, when that image was finished; an image whose
        loop stopped at the decision step has no finished pixels to return, so it is blocked."""
        report = first.error_report(error)
        if report.action == "none":
            report.action = "blocked" if result.stopped_at is not None else "flagged"
        report.score, report.memorized = result.reports[image].score, result.reports[image].memorized
        report.attempts = list(result.reports[image].attempts)
        report.calibration_coverage = result.reports[image].calibration_coverage
        return report

    # --- re-sampling one image -------------------------------------------------------------------
    def _resample(self, parent_call, arguments: dict, first: GuardedPass, result: PassResult, image: int):
        config, policy = self.config, self.config.policy
        verification = config.verification
        verdict = result.verdicts[image]
        report = result.reports[image]
        history = list(report.attempts)
        prompt = first.prompt_text(image)
        offsets = result.offsets.get(image)  # set by the first pass for every memorized image
        inputs = result.inputs(image)
        start = None if self.family.starts_from_image else result.start_noise(image)
        mitigation = config.effective_mitigation
        intended_tokens = _tokens_in(offsets, verdict.intended_spans)
        unintended_spans = [(t.start, t.end) for t in verdict.unintended_triggers]
        base = MitigationContext(
            pipe=self.pipe,
            unet=result.recorder.eager,
            prompt=prompt,
            inputs=inputs,
            latents=start,
            input_scale=_input_scale(inputs, start),
            guidance_scale=float(arguments["guidance_scale"]),
            threshold=first.threshold.value,
            noise_target=first.threshold.value if isinstance(first.detector, NoiseMagnitudeDetector) else None,
            intended_spans=tuple(verdict.intended_spans),
            intended_tokens=intended_tokens,
            unintended_spans=tuple(unintended_spans),
            unintended_tokens=_tokens_in(offsets, unintended_spans),
            other_tokens=tuple(
                k for k in _tokens_in(offsets, [(0, len(prompt or ""))]) if k not in set(intended_tokens)
            ),
            attempt=0,
            seed=0,
        )
        seed_source = start if start is not None else inputs.sample
        last: tuple[object, MemorizationReport] | None = None
        for attempt in range(1, policy.max_attempts + 1):
            context = replace(base, attempt=attempt, seed=derive_seed(seed_source, attempt))
            # The first re-sample starts from the first generation's noise; a retry from new noise, or a
            # deterministic mitigation would repeat the image it is retrying (a copy, say). Families that
            # start from an image draw new noise for it on every attempt (the re-sample's generator).
            begin = start if attempt == 1 else fresh_noise(context.seed, start)
            with result.recorder.own_unet_calls():
                plan = mitigation.apply(ResamplePlan(latents=begin, prompt=prompt), context)
            generator = torch.Generator("cpu").manual_seed(context.seed)
            attempt_pass = GuardedPass(
                self.pipe,
                self.family,
                config,
                self.family.resample_arguments(self.pipe, arguments, image, plan, inputs, generator),
                detector=self.detector,
                attempt=attempt,
                edits=plan.edits,
                rescored=plan.rescored,
                threshold=first.threshold,
                verdicts=[verdict],
                keep_inputs=False,
            )
            outcome = attempt_pass.run(parent_call)
            attempt_report = outcome.reports[0]
            action = outcome.actions[0] if outcome.actions else "none"
            stopped = outcome.stopped_at if action in ("block", "retry") else None
            if verification is not None and stopped is None:
                attempt_report.copy = verification.check(outcome.output.images)[0]
            copied = attempt_report.copy.copied if attempt_report.copy is not None else None
            history.append(
                Attempt(
                    attempt_report.score,
                    attempt_report.memorized,
                    attempt_report.intent,
                    "+".join(plan.applied),
                    stopped,
                    copied,
                )
            )
            last = (outcome.output, attempt_report)
            if action != "retry" and not (copied and attempt < policy.max_attempts):
                break
        output, final = last
        final.attempts = history
        # The decision that caused the re-sample stays on the report (score, signals, verdict); the
        # returned re-sample's own score is `returned_score`, and every attempt keeps its own.
        final.returned_score = final.score
        final.score, final.memorized, final.signals = report.score, report.memorized, report.signals
        final.decided_at_step = report.decided_at_step
        final.intent, final.triggers = report.intent, report.triggers
        final.residual_score, final.reference_score = report.residual_score, report.reference_score
        final.calibration_coverage = report.calibration_coverage  # the prompt's, whatever the re-sample encoded
        if final.copy is not None and final.copy.copied:
            final.action = REPORT_ACTION[policy.fallback]
            final.reason = (
                f"still copies a protected image after {len(history) - 1} re-sample(s) (copy verification); "
                f"fallback {policy.fallback}"
            )
        elif final.action in ("none", "allowed"):
            final.action = "resampled"
            final.reason = f"re-sampled with {history[-1].mitigation} after {report.reason}"
        else:
            final.reason = f"still memorized after {len(history) - 1} re-sample(s); fallback {policy.fallback}"
        if not plan.rescored:
            final.reason += " (this mitigation acts after the decision step, so the re-sample was not re-scored)"
        return output, final


def _unchecked_kept_images(reports: list[MemorizationReport]) -> list[int]:
    """The images the detector let through whose copy is not checked yet (re-samples are checked per attempt)."""
    return [i for i, r in enumerate(reports) if r.action in ("none", "allowed", "flagged") and r.copy is None]


UNCALIBRATED = (
    "memguard: this guarded pipeline has no calibration, so its detector only observes: images are returned as "
    "drawn (a configured copy verification still acts) and reports say what the model-free default threshold "
    "({threshold}) would flag. Calibrate it on your model: "
    "`memguard calibrate --model <hub id or folder> --out calibration.json` (or memguard.calibrate(pipe, ...)), "
    "then GuardConfig(calibration='calibration.json'); GuardConfig(act_uncalibrated=True) acts without one"
)


def _warn_uncalibrated_once(pipe, threshold: float) -> None:
    if not pipe.__dict__.get("_memguard_warned_uncalibrated"):
        pipe.__dict__["_memguard_warned_uncalibrated"] = True
        warnings.warn(UNCALIBRATED.format(threshold=threshold), UserWarning, stacklevel=6)


def _replace_image(output, image: int, replacement) -> None:
    """Image `image` of `output` (and its per-image fields, e.g. `nsfw_content_detected`) replaced by
    the only image of `replacement`."""
    output.images = replace_image(output.images, image, replacement.images)
    for item in fields(output):
        if item.name in ("images", "memorization"):
            continue
        values, new = getattr(output, item.name, None), getattr(replacement, item.name, None)
        if isinstance(values, list) and isinstance(new, list) and new and image < len(values):
            values[image] = new[0]


def _input_scale(inputs, start: torch.Tensor | None) -> float:
    """How the scheduler scales a starting noise into the first UNet input (x_T -> sample)."""
    if start is None:
        return 1.0
    flat, sample = start.float().flatten(), inputs.latents.float().flatten()
    return float((sample @ flat) / (flat @ flat).clamp_min(1e-12))


def _tokens_in(offsets: list[tuple[int, int]] | None, spans) -> tuple[int, ...]:
    if not offsets:
        return ()
    return tuple(k for k, (a, b) in enumerate(offsets) if b > a and any(a < end and start < b for start, end in spans))
