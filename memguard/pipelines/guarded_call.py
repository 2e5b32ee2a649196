"""One guarded call: the caller's generation, then a re-sample for each image whose verdict asks
for one, with the configured mitigation, until it passes or `Policy.max_attempts` is spent.

Each generation is a `GuardedPass` (guarded_pass.py). A re-sample runs one image alone; it stops at
the decision step when it is still memorized and attempts remain, so a failed attempt costs k steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..actions import blank_out, replace_image
from ..config import GuardConfig
from ..detection import Detector, NoiseMagnitudeDetector
from ..mitigation import MitigationContext, ResamplePlan, derive_seed, fresh_noise
from ..report import Attempt, GuardedPipelineOutput, MemorizationReport
from ..verify.step import as_image_list
from .guarded_pass import REPORT_ACTION, GuardedPass, PassResult, bind_call_arguments, disabled_report, prompt_of

__all__ = ["GuardedCall", "bind_call_arguments"]


class GuardedCall:
    """Runs `parent_call` (the unguarded `__call__`) under the guard, re-sampling as the policy says."""

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
        self.detector = detector
        self.stop_after_decision = stop_after_decision

    def run(self, parent_call: Callable) -> GuardedPipelineOutput | tuple:
        metrics = self.config.effective_metrics
        return_dict = self.arguments.pop("return_dict", True)
        try:
            output, reports, threshold = self._run(parent_call)
        except Exception as error:
            metrics.observe_error(self.config.name, error)
            raise
        if not self.stop_after_decision:  # audits score prompts; they generate no images to count
            metrics.observe_call(self.config.name, reports)
        if threshold is not None:
            fingerprint = self.config.calibration.model_fingerprint if threshold.source == "calibration" else ""
            metrics.observe_threshold(self.config.name, threshold.value, threshold.source, fingerprint)
        if not return_dict:
            return output.images, output.nsfw_content_detected, reports
        return GuardedPipelineOutput(
            images=output.images, nsfw_content_detected=output.nsfw_content_detected, memorization=reports
        )

    def _run(self, parent_call: Callable):
        if not self.config.enabled:
            output = parent_call(**self.arguments, return_dict=True)
            return output, [disabled_report() for _ in range(len(output.images))], None
        arguments = dict(self.arguments)
        if self.config.policy.resamples and not self.stop_after_decision and arguments.get("latents") is None:
            # Draw the starting noise exactly as the pipeline would (same generator, shape, dtype), so
            # images are unchanged and a re-sample knows where the first generation started.
            arguments["latents"] = self._initial_noise(arguments)
            arguments["generator"] = None
        verification = None if self.stop_after_decision else self.config.verification
        if verification is not None and arguments.get("output_type") == "latent":
            raise ValueError(
                "GuardConfig.verification checks decoded images; output_type='latent' cannot be verified "
                "(use 'pil', 'np' or 'pt', or a config without verification)"
            )
        first = GuardedPass(
            self.pipe, self.config, arguments, detector=self.detector, stop_after_decision=self.stop_after_decision
        )
        first.validate()
        result = first.run(parent_call)
        output, reports = result.output, result.reports
        if result.failure is not None:
            self.config.effective_metrics.observe_error(self.config.name, result.failure)
        extra_seconds = 0.0
        for image, action in enumerate(result.actions):
            if action != "retry":
                continue
            t0 = time.perf_counter()
            try:
                final_output, report = self._resample(parent_call, arguments, first, result, image)
            except Exception as error:  # the guard's own failure while re-sampling
                self.config.effective_metrics.observe_error(self.config.name, error)
                reports[image] = self._failed_resample_report(first, result, image, error)
                continue
            finally:
                extra_seconds += time.perf_counter() - t0
            output.images = replace_image(output.images, image, final_output.images)
            if output.nsfw_content_detected is not None and final_output.nsfw_content_detected is not None:
                output.nsfw_content_detected[image] = final_output.nsfw_content_detected[0]
            reports[image] = report
        if verification is not None:
            t0 = time.perf_counter()
            self._verify_kept_images(verification, output.images, reports)
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
        kept = [i for i, r in enumerate(reports) if r.action in ("none", "allowed", "flagged") and r.copy is None]
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

    def _failed_resample_report(self, first: GuardedPass, result: PassResult, image: int, error: BaseException):
        """fail_open returns the first image, flagged, when that image was finished; an image whose
        loop stopped at the decision step has no finished pixels to return, so it is blocked."""
        report = first.error_report(error)
        if report.action == "none":
            report.action = "blocked" if result.stopped_at is not None else "flagged"
        report.score, report.memorized = result.reports[image].score, result.reports[image].memorized
        report.attempts = list(result.reports[image].attempts)
        return report

    def _initial_noise(self, arguments: dict) -> torch.Tensor:
        pipe = self.pipe
        batch = len(arguments["prompt"]) if isinstance(arguments.get("prompt"), list) else 1
        if arguments.get("prompt") is None and arguments.get("prompt_embeds") is not None:
            batch = arguments["prompt_embeds"].shape[0]
        batch *= int(arguments.get("num_images_per_prompt") or 1)
        height = arguments.get("height") or pipe.unet.config.sample_size * pipe.vae_scale_factor
        width = arguments.get("width") or pipe.unet.config.sample_size * pipe.vae_scale_factor
        shape = (
            batch,
            pipe.unet.config.in_channels,
            int(height) // pipe.vae_scale_factor,
            int(width) // pipe.vae_scale_factor,
        )
        dtype = (
            arguments["prompt_embeds"].dtype if arguments.get("prompt_embeds") is not None else pipe.text_encoder.dtype
        )
        return randn_tensor(shape, generator=arguments.get("generator"), device=pipe._execution_device, dtype=dtype)

    # --- re-sampling one image -------------------------------------------------------------------
    def _resample(self, parent_call, arguments: dict, first: GuardedPass, result: PassResult, image: int):
        config, policy = self.config, self.config.policy
        verification = config.verification
        recorder = result.recorder
        verdict = result.verdicts[image]
        report = result.reports[image]
        history = list(report.attempts)
        prompt = prompt_of(arguments, image)
        offsets = result.offsets.get(image)  # set by the first pass for every memorized image
        latents = arguments["latents"][image : image + 1]
        sample = recorder.first_sample[image : image + 1].float()
        flat = latents.float().flatten()
        input_scale = float((sample.flatten() @ flat) / (flat @ flat).clamp_min(1e-12))
        mitigation = config.effective_mitigation
        intended_tokens = _tokens_in(offsets, verdict.intended_spans)
        base = MitigationContext(
            pipe=self.pipe,
            prompt=prompt,
            cond_embeds=recorder.first_cond_states[image : image + 1],
            uncond_embeds=(
                recorder.first_uncond_states[image : image + 1] if recorder.first_uncond_states is not None else None
            ),
            latents=latents,
            input_scale=input_scale,
            first_timestep=recorder.trace.steps[0].timestep,
            guidance_scale=float(arguments["guidance_scale"]),
            threshold=first.threshold.value,
            noise_target=first.threshold.value if isinstance(first.detector, NoiseMagnitudeDetector) else None,
            intended_spans=tuple(verdict.intended_spans),
            intended_tokens=intended_tokens,
            unintended_tokens=_tokens_in(offsets, [(t.start, t.end) for t in verdict.unintended_triggers]),
            other_tokens=tuple(
                k for k in _tokens_in(offsets, [(0, len(prompt or ""))]) if k not in set(intended_tokens)
            ),
            attempt=0,
            seed=0,
        )
        last: tuple[object, MemorizationReport] | None = None
        for attempt in range(1, policy.max_attempts + 1):
            context = replace(base, attempt=attempt, seed=derive_seed(latents, image, attempt))
            # The first re-sample starts from the first generation's noise; a retry from new noise, or a
            # deterministic mitigation would repeat the image it is retrying (a copy, say).
            start = latents if attempt == 1 else fresh_noise(context.seed, latents)
            with recorder.own_unet_calls():
                plan = mitigation.apply(ResamplePlan(latents=start, prompt=prompt), context)
            attempt_pass = GuardedPass(
                self.pipe,
                config,
                self._attempt_arguments(arguments, image, plan, context),
                detector=self.detector,
                attempt=attempt,
                edits=plan.edits,
                rescored=plan.rescored,
                threshold=first.threshold,
                verdicts=[verdict],
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
        # The verdict that caused the re-sample stays on the report; the attempts keep their own.
        final.intent, final.triggers = report.intent, report.triggers
        final.residual_score, final.reference_score = report.residual_score, report.reference_score
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

    def _attempt_arguments(self, arguments: dict, image: int, plan: ResamplePlan, context: MitigationContext) -> dict:
        attempt = dict(arguments)
        attempt.update(num_images_per_prompt=1, latents=plan.latents, generator=None)
        negative = arguments.get("negative_prompt")
        per_prompt = int(arguments.get("num_images_per_prompt") or 1)
        if plan.prompt is not None and plan.prompt_embeds is None:
            attempt.update(prompt=[plan.prompt], prompt_embeds=None)
            if isinstance(negative, list):
                attempt["negative_prompt"] = [negative[image // per_prompt]]
            if arguments.get("negative_prompt_embeds") is not None:
                attempt["negative_prompt_embeds"] = arguments["negative_prompt_embeds"][image // per_prompt][None]
        else:
            embeds = plan.prompt_embeds if plan.prompt_embeds is not None else context.cond_embeds
            attempt.update(
                prompt=None, prompt_embeds=embeds, negative_prompt=None, negative_prompt_embeds=context.uncond_embeds
            )
        return attempt


def _tokens_in(offsets: list[tuple[int, int]] | None, spans) -> tuple[int, ...]:
    if not offsets:
        return ()
    return tuple(k for k, (a, b) in enumerate(offsets) if b > a and any(a < end and start < b for start, end in spans))
