"""One guarded pass of a pipeline: install taps, decide at step k, judge intent.

The parent pipeline's own `__call__` runs unchanged; the guard only adds a chained
`callback_on_step_end` (where it decides, resolves intent and may stop the loop early) and the
signal taps. What differs between pipeline families comes from the call's `Family`. Re-sampling
(several passes for one image) lives in `guarded_call.py`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..calibration import UNCOVERED, Coverage
from ..config import GuardConfig
from ..detection import Decision, Detector, decide
from ..errors import MemguardValueError
from ..intent import IntentResolver, IntentVerdict
from ..intent.attribution import gradient_token_scores, token_offsets
from ..prompt_tokens import prompt_token_counts
from ..report import Attempt, MemorizationReport
from ..signals import SignalRecorder, UNetTap, cross_attention_layers
from ..signals.edits import Edits, editing
from ..signals.replay import ImageInputs
from ..signals.rollout import roll_out
from ..signals.taps import eager_module, is_compiled
from ..signals.tokens import end_token_positions
from .families import Family, PromptText


@dataclass
class LoopStart:
    """What the pipeline's `prepare_latents` left as its loop begins (the guarded classes report it;
    see `GuardedPipelineMixin.prepare_latents`)."""

    latents: torch.Tensor  # the starting latents (N, C, h, w)
    init_noise_sigma: float  # the scheduler's scale of a pure-noise start
    scheduler: object | None = None  # a copy of the scheduler as the loop begins, when a roll-out may need it


@dataclass
class LoopStartSink:
    """Where a running pass collects its `LoopStart`s; `copy_scheduler`: keep a scheduler copy too."""

    copy_scheduler: bool = False
    starts: list[LoopStart] = field(default_factory=list)


latents_sink: ContextVar[LoopStartSink | None] = ContextVar("memguard_latents_sink", default=None)


@dataclass(frozen=True)
class Threshold:
    value: float
    source: str  # "config" | "calibration" | "default"


def resolve_threshold(pipe, config: GuardConfig, detector: Detector | None = None) -> Threshold:
    if config.calibration is not None:
        # also under an explicit threshold: the calibration's fitted statistics still shape the score
        _check_calibration_once(pipe, config.calibration)
    if config.threshold is not None:
        return Threshold(float(config.threshold), "config")
    if config.calibration is not None:
        return Threshold(config.calibration.threshold, "calibration")
    detector = detector or config.effective_detector
    if detector.default_threshold is None:
        raise MemguardValueError(
            f"detector {detector.name!r} has no model-free default threshold: pass GuardConfig(calibration=...) "
            "(see memguard.calibrate) or GuardConfig(threshold=...)"
        )
    return Threshold(float(detector.default_threshold), "default")


def _check_calibration_once(pipe, calibration) -> None:
    # Fingerprinting reads every weight tensor's ends; do it once per (pipeline, calibration, weights):
    # weights loaded into the modules in place (a LoRA fused, a state dict loaded) bump their tensors'
    # version counters, and a module swapped for another changes its id, so either is checked again.
    checked = pipe.__dict__.setdefault("_memguard_checked_calibrations", set())
    key = (calibration.model_fingerprint, _weights_state(pipe))
    if key not in checked:
        calibration.check_model(pipe)
        checked.add(key)


def _weights_state(pipe) -> tuple:
    """What changes when the fingerprinted weights may have: the modules' ids and their tensors'
    in-place version counters (microseconds to read, against the fingerprint's full pass)."""
    state = []
    for component in getattr(getattr(pipe, "family", None), "fingerprinted", ()):
        module = getattr(pipe, component, None)
        if isinstance(module, torch.nn.Module):
            versions = sum(t._version for t in module.state_dict(keep_vars=True).values())
            state.append((component, id(module), versions))
    return tuple(state)


def resolve_attention_layers(
    unet, config: GuardConfig, detector_reads_attention: bool = False
) -> frozenset[str] | None:
    if not config.record_attention:
        if detector_reads_attention:
            raise MemguardValueError("GuardConfig.record_attention=False, but the detector reads cross-attention")
        return None
    available = cross_attention_layers(unet)
    if config.attention_layers is None:
        return frozenset(available)
    chosen = set()
    for name in config.attention_layers:
        layer = name[: -len(".processor")] if name.endswith(".processor") else name
        if layer not in available:
            examples = ", ".join(sorted(available)[:3])
            raise MemguardValueError(
                f"GuardConfig.attention_layers: {name!r} is not a cross-attention layer of this UNet "
                f"({len(available)} exist, e.g. {examples})"
            )
        chosen.add(layer)
    return frozenset(chosen)


# What a pass decided for each image. "retry": re-sample this image (attempts remain).
PassAction = str  # "none" | "allow" | "flag" | "block" | "retry"
REPORT_ACTION = {"none": "none", "allow": "allowed", "flag": "flagged", "block": "blocked", "retry": "flagged"}


@dataclass
class PassResult:
    output: object  # the parent's output (return_dict=True form)
    reports: list[MemorizationReport]
    actions: list[PassAction]
    verdicts: list[IntentVerdict]
    recorder: SignalRecorder | None
    guard_seconds: float = 0.0
    stopped_at: int | None = None  # the loop was ended at this step
    offsets: dict[int, list[tuple[int, int]] | None] = field(default_factory=dict)
    failure: BaseException | None = None  # the guard's own error, if it failed (see GuardConfig.on_error)
    loop_start: LoopStart | None = None  # where the loop began, as prepare_latents reported it

    def inputs(self, image: int) -> ImageInputs:
        """The first step's UNet inputs of one image (for the guard's own evaluations)."""
        return self.recorder.image_inputs(image)

    def start_noise(self, image: int) -> torch.Tensor | None:
        """Image `image`'s starting noise before the scheduler's scaling (None: not captured)."""
        start = self.loop_start
        if start is None:
            return None
        return start.latents[image : image + 1] / start.init_noise_sigma


class GuardedPass:
    """Runs the parent `__call__` once under the guard.

    `attempt` is 0 for the caller's generation and k for the k-th re-sample; `edits` are the
    re-sample's in-loop changes; `rescored=False` accepts the result without judging it again.
    """

    def __init__(
        self,
        pipe,
        family: Family,
        config: GuardConfig,
        arguments: dict,
        *,
        detector: Detector | None = None,
        stop_after_decision: bool = False,
        attempt: int = 0,
        edits: Edits | None = None,
        rescored: bool = True,
        threshold: Threshold | None = None,
        verdicts: list[IntentVerdict] | None = None,
        keep_inputs: bool = True,
    ):
        self.pipe = pipe
        self.family = family
        self.config = config
        self.arguments = dict(arguments)
        self.detector = detector or config.effective_detector
        self.stop_after_decision = stop_after_decision
        self.attempt = attempt
        self.edits = edits
        self.rescored = rescored
        self.carried_verdicts = verdicts  # re-samples: the first generation's verdicts
        self.keep_inputs = keep_inputs  # keep the first step's UNet inputs for re-samples after the pass
        self.expected_steps = family.denoising_steps(arguments)  # None: known once the loop runs
        # a post hoc detector (needs the last step) decides when the loop ends
        self.full_run = self.detector.needs.full_run
        self.decision_step = config.effective_decision_step
        self.loop_steps = self.expected_steps or 0  # learned at the first step
        self.decisions: list[Decision] | None = None
        self.verdicts: list[IntentVerdict] = []
        self.actions: list[PassAction] = []
        self.decided_at: int | None = None
        self.stopped_at: int | None = None
        self.summaries: list[dict[str, float]] = []
        self.recorder: SignalRecorder | None = None
        self.threshold: Threshold | None = threshold
        self.resolver = IntentResolver(config.registry, config.implicit)
        self.offsets: dict[int, list[tuple[int, int]] | None] = {}
        self._uncond_cache: dict | None = None
        self._coverage: dict[int, Coverage | None] = {}
        self.uncovered_observed: set[int] = set()  # images left as drawn: GuardConfig.act_uncovered=False
        self.collected: LoopStartSink | None = None  # what prepare_latents reported while the pass ran

    # --- validation before anything runs ------------------------------------------------------
    def validate(self) -> None:
        steps = self.expected_steps
        if steps is not None and not self.full_run:
            self._check_steps(steps)
        calibration = self.config.calibration
        if calibration is not None and calibration.family != self.family.name:
            raise MemguardValueError(
                f"GuardConfig.calibration was measured on a {calibration.family!r} pipeline; this one is "
                f"{self.family.name!r} ({self.family.parent.__name__}), whose scores it does not describe: "
                "calibrate this pipeline (memguard.calibrate) or pass GuardConfig(threshold=...)"
            )
        if calibration is not None and self.config.threshold is None:
            height, width = self.family.resolution(self.pipe, self.arguments)
            differs = calibration.call_differences(
                num_inference_steps=self.arguments.get("num_inference_steps"),  # as asked, as calibrate() records
                guidance_scale=float(self.arguments["guidance_scale"]),
                scheduler=type(self.pipe.scheduler).__name__,
                dtype=str(self.family.denoiser(self.pipe).dtype).removeprefix("torch."),
                height=height,
                width=width,
            )
            if differs:
                warnings.warn(
                    "memguard: this call differs from its calibration (" + "; ".join(differs) + "); "
                    "scores may not be comparable with the calibrated threshold",
                    stacklevel=6,  # validate < _run < run < _guarded_call < __call__ < the caller
                )

    def _check_steps(self, steps: int) -> None:
        if self.decision_step <= steps:
            return
        name = self.family.steps_argument(self.arguments)
        value = self.arguments.get(name)
        if name in ("num_inference_steps", "timesteps", "sigmas"):
            shown = f"{name}={value!r}" if name == "num_inference_steps" else f"{name} (length {steps})"
            raise MemguardValueError(
                f"GuardConfig.decision_step={self.decision_step} is beyond {shown}; the guard decides at that "
                "step (GuardConfig.decision_step, else the calibration's, else the detector's own): run more steps"
            )
        raise MemguardValueError(
            f"GuardConfig.decision_step={self.decision_step} is beyond the {steps} denoising step(s) that "
            f"{name}={value!r} leaves of num_inference_steps={self.arguments.get('num_inference_steps')!r}: "
            f"{'lower' if name == 'denoising_start' else 'raise'} {name} or raise num_inference_steps"
        )

    # --- the pass ------------------------------------------------------------------------------
    def run(self, parent_call: Callable) -> PassResult:
        started = time.perf_counter()
        if self.threshold is None:
            self.threshold = resolve_threshold(self.pipe, self.config, self.detector)
        unet = self.family.denoiser(self.pipe)
        if self.edits is not None and is_compiled(unet):
            unet = eager_module(unet)  # a re-sample's edits change attention processors: no compiled graph
        needs = self.detector.needs
        record_until = self.decision_step
        if self.config.record_all_steps or needs.all_steps:
            record_until = None
        self.recorder = SignalRecorder(
            unet,
            guidance_enabled=lambda: self.pipe.do_classifier_free_guidance,
            record_until_step=record_until,
            attention_layers=resolve_attention_layers(unet, self.config, needs.attention),
            unconditional_inputs=self._unconditional_inputs if self.config.unconditional_pass else None,
            needs=needs,
            end_token_index=self._end_token_index(),
            last_step=None if self.expected_steps is None else self.expected_steps - 1,
            schedule=lambda: getattr(self.pipe.scheduler, "timesteps", None),
        )
        arguments = dict(self.arguments)
        user_callback = arguments.pop("callback_on_step_end")
        tensor_inputs = arguments.pop("callback_on_step_end_tensor_inputs")
        arguments.pop("return_dict", None)
        if isinstance(user_callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = user_callback.tensor_inputs
        # The user's callback receives exactly the tensors it asked for; the loop hands the guard the
        # latents too when a detector reads them (the step's update, SignalNeeds.latent_updates).
        asked = list(tensor_inputs or [])
        watch_latents = needs.latent_updates
        loop_inputs = asked if not watch_latents or "latents" in asked else [*asked, "latents"]
        setup_seconds = time.perf_counter() - started
        # a trajectory score's intent check rolls the rest of the prompt out from the loop's start
        self.collected = LoopStartSink(copy_scheduler=watch_latents and self.resolver.can_clear)

        def on_step_end(pipe, step_index, timestep, callback_kwargs):
            latents = callback_kwargs.get("latents") if watch_latents else None
            if watch_latents:  # before the decision, which may read this step's update
                start = self.loop_start.latents if step_index == 0 and self.loop_start else None
                self.recorder.on_step_latents(step_index, latents, start)
            self._on_step_end(pipe, step_index)
            outputs = callback_kwargs
            if user_callback is not None:
                given = callback_kwargs if loop_inputs is asked else {k: callback_kwargs[k] for k in asked}
                outputs = user_callback(pipe, step_index, timestep, given)
            if watch_latents:  # the loop goes on from the latents the user's callback returned, if any
                returned = outputs.get("latents") if isinstance(outputs, dict) else None
                self.recorder.continue_from(step_index + 1, latents if returned is None else returned)
            return outputs

        sink = latents_sink.set(self.collected)
        try:
            with self._eager_for_edits(unet), UNetTap.recording(self.recorder.unet, self.recorder), editing(self.edits):
                output = parent_call(
                    **arguments,
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=loop_inputs,
                    return_dict=True,
                )
                if self.recorder.num_images is None:
                    # no denoising step ran (SDXL's denoising_end/start can leave none): nothing was checked
                    self._check_steps(0)
                finishing = time.perf_counter()
                try:
                    if self.decisions is None and self.recorder.failure is None:  # the loop ended early
                        self._decide(len(self.recorder.trace.recorded_steps()))
                    reports = self._reports() if self.recorder.failure is None else None
                except Exception as error:
                    self.recorder.fail(error)
        finally:
            latents_sink.reset(sink)
        failure = self.recorder.failure
        if failure is not None:
            self.actions = ["none"] * len(output.images)
            reports = [self.error_report(failure) for _ in range(len(output.images))]
        if not (self.keep_inputs and any(a == "retry" for a in self.actions)):
            self.recorder.release_first_call()  # nothing will replay them; ControlNet residuals are large
        guard_seconds = setup_seconds + self.recorder.seconds + (time.perf_counter() - finishing)
        return PassResult(
            output,
            reports,
            self.actions,
            self.verdicts,
            self.recorder,
            guard_seconds,
            self.stopped_at,
            self.offsets,
            failure,
            self.loop_start,
        )

    @contextmanager
    def _eager_for_edits(self, unet):
        """While a re-sample with edits runs on a compiled UNet, the pipeline calls the original module."""
        name = self.family.denoiser_name
        compiled = self.pipe.__dict__.get(name)
        if compiled is unet:
            yield
            return
        self.pipe.__dict__[name] = unet  # the attribute only: the pipeline's config is unchanged
        try:
            yield
        finally:
            self.pipe.__dict__[name] = compiled

    def error_report(self, error: BaseException) -> MemorizationReport:
        """The report of an image the guard failed on. Only the error's type is kept: messages may
        quote inputs, and reports, logs and metric labels never carry prompts."""
        closed = self.config.on_error == "fail_closed"
        return MemorizationReport(
            score=math.nan,
            threshold=self.threshold.value if self.threshold is not None else math.nan,
            memorized=False,
            decided_at_step=0,
            action="blocked" if closed else "none",
            status="error",
            detector=self.detector.name,
            threshold_source=self.threshold.source if self.threshold is not None else "default",
            reason=f"guard error ({type(error).__name__}); on_error={self.config.on_error}",
        )

    def _on_step_end(self, pipe, step_index: int) -> None:
        start = time.perf_counter()
        self.recorder.step = step_index + 1
        if step_index == 0:
            self._learn_steps(pipe)
        decision_step = self.loop_steps if self.full_run else self.decision_step
        if self.decisions is None and step_index + 1 == decision_step and self.recorder.failure is None:
            try:
                self._decide(decision_step)
            except Exception as error:  # the guard's own failure: GuardConfig.on_error decides
                self.recorder.fail(error)
        if self.recorder.failure is not None:
            if self.config.on_error == "fail_closed" and self.stopped_at is None:
                pipe._interrupt = True  # every image will be blocked: skip the remaining steps
                self.stopped_at = step_index + 1
        elif self.decided_at == step_index + 1 and not self.full_run:
            if self.stop_after_decision or all(a in ("block", "retry") for a in self.actions):
                # diffusers' documented way to end the loop from a step callback: the remaining
                # UNet calls are skipped (the VAE decode still runs).
                pipe._interrupt = True
                self.stopped_at = self.decision_step
        self.recorder.seconds += time.perf_counter() - start

    def _learn_steps(self, pipe) -> None:
        """The loop's real length, known once it runs (SDXL's denoising_start/end, order-2 schedulers)."""
        steps = getattr(pipe, "_num_timesteps", None)
        self.loop_steps = int(steps) if isinstance(steps, int) and steps > 0 else (self.expected_steps or 0)
        self.recorder.set_last_step(self.loop_steps - 1)
        if self.expected_steps is None and not self.full_run:
            self._check_steps(self.loop_steps)

    def _decide(self, upto_step: int) -> None:
        self.decided_at = upto_step
        trace = self.recorder.trace
        self.summaries = trace.summarize(upto_step) if upto_step else []
        self.decisions = decide(self.detector.score(trace, upto_step), self.threshold.value) if upto_step else []
        broken = sum(not all(map(math.isfinite, signals.values())) for signals in self.summaries)
        if broken:  # signals were read but are NaN or infinite (non-finite latents?): a fault, not "clean"
            raise FloatingPointError(f"the signals read for {broken} image(s) are not finite")
        unscored = sum(not math.isfinite(d.score) for d in self.decisions)
        if unscored and self.recorder.noise_unavailable_reason is None:  # a detector's fault, not "unavailable"
            raise FloatingPointError(f"the detector's score for {unscored} image(s) is not finite")
        if not self.rescored:  # a re-sample whose mitigation the early score cannot see
            self.verdicts = [IntentVerdict("none") for _ in self.decisions]
            self.actions = ["none"] * len(self.decisions)
            return
        if self.carried_verdicts is not None:
            self.verdicts = [
                v.judge_resample(d.score, self.threshold.value) if d.memorized else IntentVerdict("none")
                for v, d in zip(self.carried_verdicts, self.decisions, strict=False)
            ]
        else:
            self.verdicts = [self._verdict(i, d) for i, d in enumerate(self.decisions)]
        policy = self.config.policy
        self.actions = []
        for verdict in self.verdicts:
            action = policy.action_for(verdict.intent) or "none"
            if action == "resample":
                action = (
                    "retry" if self.attempt < policy.max_attempts and not self.stop_after_decision else policy.fallback
                )
            self.actions.append(action)
        if self.observing:  # an uncalibrated default threshold: report what it finds, touch nothing
            self.actions = ["none"] * len(self.actions)
        elif not self.config.act_uncovered:  # nor where the calibration's guarantee says nothing
            for i, action in enumerate(self.actions):
                if action in ("flag", "block", "retry") and self.coverage(i) in UNCOVERED:
                    self.actions[i] = "none"
                    self.uncovered_observed.add(i)

    @property
    def observing(self) -> bool:
        return self.threshold is not None and self.threshold.source == "default" and not self.config.act_uncalibrated

    def coverage(self, image: int) -> Coverage | None:
        """Whether the calibrated threshold's benign prompts span this image's prompt length (None:
        no calibrated threshold, a calibration without the record, prompt embeddings, or a tokenizer
        that cannot count the prompt)."""
        if image not in self._coverage:
            calibration = self.config.calibration
            prompt = self.prompt_text(image) if self.threshold.source == "calibration" else None
            tokenizer = self.family.tokenizer(self.pipe) if prompt is not None else None
            counts = prompt_token_counts(tokenizer, [prompt]) if tokenizer is not None else None
            self._coverage[image] = calibration.coverage(counts[0]) if counts else None
        return self._coverage[image]

    # --- intent ----------------------------------------------------------------------------------
    def _verdict(self, image: int, decision: Decision) -> IntentVerdict:
        if not decision.memorized:
            return IntentVerdict("none")
        prompt = self.prompt_text(image)
        scores = self._token_scores(image, prompt)
        offsets = self._offsets(image, prompt)
        return self.resolver.resolve(
            prompt,
            memorized=True,
            token_scores=scores,
            offsets=offsets,
            threshold=self.threshold.value,
            residual=lambda text: self.residual_score(image, text),
        )

    def prompt_text(self, image: int) -> str | None:
        return self.family.prompt_text(self.arguments, image).text

    def _end_token_index(self) -> torch.Tensor | None:
        prompt = self.arguments.get("prompt")
        if prompt is None or not self.detector.needs.end_token_map_last_step and not self.detector.needs.all_steps:
            return None
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        tokenizer = self.family.tokenizer(self.pipe)
        return end_token_positions(tokenizer, prompts, self.family.images_per_prompt(self.arguments))

    def _offsets(self, image: int, prompt: str | None):
        if image not in self.offsets:
            states = self.recorder.first_cond_states
            length = states.shape[1] if states is not None else 77
            tokenizer = self.family.tokenizer(self.pipe)
            self.offsets[image] = token_offsets(tokenizer, prompt, length) if prompt is not None else None
        return self.offsets[image]

    def _token_scores(self, image: int, prompt: str | None) -> torch.Tensor | None:
        if prompt is None:
            return None
        recorder = self.recorder
        inputs = recorder.image_inputs(image) if self.config.attribution == "gradient" else None
        if inputs is not None and inputs.uncond is not None:
            with recorder.own_unet_calls():
                return gradient_token_scores(recorder.eager, inputs)
        mass = recorder.trace.token_mass([s for s in range(self.decided_at or 0)])
        return mass[image] if mass is not None else None

    @torch.no_grad()
    def residual_score(self, image: int, text: str) -> float:
        """The detector's score of `text` (the prompt with its intended spans replaced by their
        stand-ins), averaged over `residual_draws` fresh starting noises (seeded: reproducible). A
        first-step score reads one UNet evaluation of them; a score of the loop's own steps (the
        latent updates) rolls them out through the decision step (`memguard.signals.rollout`). Read
        through a second recorder, so it never mixes with this pass's signals. Both text encoders of
        a two-encoder family see `text`. +inf (the rest cannot be cleared) without an unconditional
        branch, for a post hoc score, or for a roll-out whose schedule could not be followed."""
        recorder = self.recorder
        needs = self.detector.needs
        inputs = None if recorder.first_call is None or needs.full_run else recorder.image_inputs(image)
        if inputs is None or inputs.uncond is None:
            return math.inf  # no unconditional branch, or a post hoc score: cannot clear the rest
        steps = self.decided_at or 1
        start = self.loop_start
        if needs.latent_updates and (start is None or start.scheduler is None):
            return math.inf  # a score of the loop's own steps, and no copy of the schedule to roll out on
        latents = inputs.latents
        generator = torch.Generator("cpu").manual_seed(0)
        noise = torch.randn((self.config.residual_draws, *latents.shape[1:]), generator=generator)
        cond = self.family.encode_text(
            self.pipe, PromptText(text), latents.device, inputs.cond_states.dtype, self.arguments
        )
        unet = recorder.eager  # the guard's own evaluation never runs (or retraces) a compiled graph
        probe = SignalRecorder(
            unet,
            guidance_enabled=lambda: True,
            record_until_step=steps if needs.latent_updates else 1,
            attention_layers=recorder.attention_layers,
            needs=needs,
            schedule=recorder.schedule,
        )
        with UNetTap.recording(unet, probe), editing(None):
            if not needs.latent_updates:
                noise = (noise * latents.float().std().cpu()).to(latents.device, latents.dtype)
                inputs.predict(unet, noise, cond=cond.as_kwargs())
                return float(self.detector.score(probe.trace, 1).mean())
            scale = start.latents[image].float().std().cpu()  # the loop's own start: pure noise or a noised image
            followed = roll_out(
                probe,
                inputs,
                start.scheduler,
                (noise * scale).to(latents.device, start.latents.dtype),
                steps,
                guidance_scale=float(self.arguments["guidance_scale"]),
                cond=cond.as_kwargs(),
            )
        return float(self.detector.score(probe.trace, steps).mean()) if followed else math.inf

    @property
    def loop_start(self) -> LoopStart | None:
        """The loop's start, as `prepare_latents` reported it (None before it ran)."""
        return self.collected.starts[0] if self.collected is not None and self.collected.starts else None

    def _unconditional_inputs(self) -> dict:
        if self._uncond_cache is None:
            states = self.recorder.first_cond_states
            self._uncond_cache = self.family.unconditional_inputs(
                self.pipe, self.arguments, self.pipe._execution_device, states.dtype if states is not None else None
            )
        return self._uncond_cache

    # --- reports -------------------------------------------------------------------------------
    def _uncovered_note(self, image: int) -> str:
        coverage = self.coverage(image)
        if coverage not in UNCOVERED:
            return ""
        observed = "; observed only (GuardConfig.act_uncovered=False)" if image in self.uncovered_observed else ""
        return f"; the prompt is {coverage} than every calibration prompt{observed}"

    def _reports(self) -> list[MemorizationReport]:
        threshold = self.threshold
        unavailable = self.recorder.noise_unavailable_reason
        num_images = self.recorder.num_images or 0
        reports = []
        for i in range(num_images):
            signals = self.summaries[i] if i < len(self.summaries) else {}
            decision = self.decisions[i] if i < len(self.decisions) else Decision(math.nan, False)
            verdict = self.verdicts[i] if i < len(self.verdicts) else IntentVerdict("none")
            action = self.actions[i] if i < len(self.actions) else "none"
            checked = math.isfinite(decision.score)
            report = MemorizationReport(
                score=decision.score,
                threshold=threshold.value,
                memorized=decision.memorized,
                decided_at_step=self.decided_at or 0,
                signals=signals,
                action=REPORT_ACTION[action],
                intent=verdict.intent,
                triggers=list(verdict.triggers),
                residual_score=verdict.residual_score,
                reference_score=verdict.reference_score,
                status="checked" if checked else "unavailable",
                detector=self.detector.name,
                threshold_source=threshold.source,
                reason=None if checked else (unavailable or "no denoising step ran before the loop ended"),
                calibration_coverage=self.coverage(i),
            )
            report.attempts = [
                Attempt(
                    decision.score,
                    decision.memorized,
                    verdict.intent,
                    None,
                    self.stopped_at if action in ("block", "retry") else None,
                )
            ]
            if decision.memorized:
                report.reason = (
                    f"{self.detector.name} score {decision.score:.4g} > threshold {threshold.value:.4g} "
                    f"at step {report.decided_at_step}; intent {verdict.intent}"
                    + (f" ({verdict.note})" if verdict.note else "")
                    + ("; observed only: no calibration (GuardConfig.act_uncalibrated=False)" if self.observing else "")
                    + self._uncovered_note(i)
                )
            reports.append(report)
        return reports


def disabled_report() -> MemorizationReport:
    return MemorizationReport(
        score=math.nan,
        threshold=math.nan,
        memorized=False,
        decided_at_step=0,
        status="disabled",
        reason="GuardConfig(enabled=False)",
    )
