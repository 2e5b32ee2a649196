"""The calibration procedure: score benign prompts with a guarded pipeline, pick the threshold.

It sits above the pipelines it runs; the record it returns and the statistics it uses live in
`calibration.py`, below everything that reads a calibration.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from collections.abc import Sequence

import torch
from prometheus_client import CollectorRegistry

from .calibration import MAX_STORED_SCORES, Calibration, model_fingerprint
from .detection import CALIBRATED_DEFAULT, DETECTORS, default_decision_step, get_detector, is_fittable
from .errors import MemguardTypeError, MemguardValueError, require_positive_int
from .metrics import GuardMetrics
from .pipelines import GuardedPipelineMixin, guard
from .prompt_tokens import prompt_token_counts
from .thresholds import DEFAULT_CONFIDENCE, guaranteed_threshold, required_scores

__all__ = ["calibrate"]


def calibrate(
    pipe,
    benign_prompts: Sequence[str],
    target_fpr: float = 0.01,
    *,
    decision_step: int | None = None,
    detector=None,
    num_images_per_prompt: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    confidence: float = DEFAULT_CONFIDENCE,
    **call_kwargs,
) -> Calibration:
    """Score benign prompts at the decision step (images are not finished) and pick the threshold.

    The threshold keeps the false-positive rate on fresh benign prompts of the same distribution at or
    under `target_fpr` with probability at least `confidence` (`memguard.thresholds`). The guarantee
    needs independent samples, and the images of one prompt are not (its scores barely move with the
    noise): each distinct prompt is one sample, scored as its highest image, so a target needs enough
    distinct prompts (299 for 1% at 95%), and too few are refused, with the number, before any scoring.
    More images per prompt make the threshold more conservative, never the sample larger; a prompt
    given twice counts once.
    `pipe` is a guarded pipeline or any pipeline memguard guards (wrapped for the run); `call_kwargs`
    are further arguments of its call (`height`/`width`, an img2img `image` and `strength`, a ControlNet
    `image`...). `detector` (a detector or its name) defaults to memguard's own score,
    "top_layer_entropy", which, like any fittable detector, is fitted on the same benign prompts.
    `decision_step` defaults to the detector's own `decision_step` where it declares one (8 for
    "attention_or_updates"), else 1.
    Benign prompts for a real model: `memguard.prompts_corpus.benign_prompts()`. The calibration records
    the shortest and longest of them in text-encoder tokens (`prompt_tokens`): the guarantee describes
    prompts in that range, and the guard says of each image whether its prompt is
    (`MemorizationReport.calibration_coverage`), so include prompts as short as your users write.
    """
    if isinstance(benign_prompts, str):
        raise MemguardTypeError("benign_prompts must be a sequence of prompt strings")
    benign_prompts = list(benign_prompts)  # a generator is read once, here
    if not all(isinstance(p, str) for p in benign_prompts):
        raise MemguardTypeError("benign_prompts must be a sequence of prompt strings")
    if len(benign_prompts) == 0:
        raise MemguardValueError("benign_prompts is empty")
    require_positive_int(num_images_per_prompt, "num_images_per_prompt")  # before the prompt count's message
    _check_guidance(guidance_scale)
    prompts = list(dict.fromkeys(benign_prompts))  # a prompt given twice is one sample
    needed = required_scores(target_fpr, confidence)  # before any scoring
    if len(prompts) < needed:
        raise MemguardValueError(
            f"target_fpr={target_fpr} at confidence {confidence} needs at least {needed} distinct benign prompts, "
            f"got {len(prompts)}: the images of one prompt are not independent samples, so more images per "
            "prompt do not count; pass more prompts"
        )
    guarded = pipe if isinstance(pipe, GuardedPipelineMixin) else guard(pipe)
    detector = get_detector(detector if detector is not None else CALIBRATED_DEFAULT)
    registered = get_detector(detector.name) if detector.name in DETECTORS else None
    fitted = is_fittable(detector) and detector.fitted  # calibrate() fits it afresh: its state is no setting
    if (
        type(registered) is type(detector)
        and dataclasses.is_dataclass(detector)
        and not fitted
        and detector != registered
    ):
        # a calibration records the detector by name, and a guard rebuilds it with the registered settings
        raise MemguardValueError(
            f"calibrate: detector {detector.name!r} has settings other than the registered ones, which a "
            "calibration cannot record; register it under a name of its own "
            "(memguard.detection.register_detector(name, factory)) and calibrate that name"
        )
    if decision_step is None:
        decision_step = default_decision_step(detector)
    if detector.needs.full_run:
        raise MemguardValueError(f"detector {detector.name!r} scores only after the last step; the guard decides early")
    # A fittable detector is fitted on the benign prompts first: a collector keeps their features, so
    # the fit and the scores the threshold is chosen from come from the same pass.
    collector = _FeatureCollector(detector) if is_fittable(detector) else None
    # only scores are wanted: a threshold nothing reaches, so no image is judged or re-sampled
    # ...and counted on a registry of its own: its unreachable threshold and its scores are not what the
    # pipeline serves, so they must not reach the operator's metrics
    config = guarded.guard_config.replace(
        enabled=True,
        calibration=None,
        threshold=sys.float_info.max,
        decision_step=decision_step,
        detector=collector or detector,
        metrics=GuardMetrics(CollectorRegistry()),
    )
    reports = guarded.score(
        prompts,
        config=config,
        num_images_per_prompt=num_images_per_prompt,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        **call_kwargs,
    )
    image_scores, state = [r.score for r in reports], None
    if collector is not None:
        features = collector.features()
        fitted = detector.fit(features)  # fitted on every image
        image_scores, state = fitted.score_features(features).tolist(), fitted.state()
    # each prompt's sample is its highest image (reports are prompt-major): a fresh image scores over
    # the threshold no more often than its prompt's highest image would
    k = num_images_per_prompt
    scores = [max(image_scores[i * k : (i + 1) * k]) for i in range(len(prompts))]
    choice = guaranteed_threshold(scores, target_fpr, confidence)
    height, width = guarded.family.resolution(guarded, call_kwargs)
    ranked = sorted(scores, reverse=True)
    return Calibration(
        model_fingerprint=model_fingerprint(guarded),
        threshold=choice.threshold,
        target_fpr=target_fpr,
        decision_step=decision_step,
        detector=reports[0].detector,
        num_scores=len(scores),  # one per distinct prompt
        achieved_fpr=choice.empirical_fpr,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        scheduler=type(guarded.scheduler).__name__,
        model_name=_shareable_name(getattr(guarded, "name_or_path", "")),
        family=guarded.family.name,
        detector_state=state,
        confidence=math.floor(choice.confidence * 1e6) / 1e6,  # rounded down: never more than it is
        threshold_rank=choice.rank,
        expected_fpr=round(choice.expected_fpr, 6),
        benign_scores=[float(v) for v in ranked[:MAX_STORED_SCORES]],  # exact: the threshold is one of them
        dtype=str(guarded.family.denoiser(guarded).dtype).removeprefix("torch."),
        height=height,
        width=width,
        prompt_tokens=_token_range(guarded, prompts),
    )


def _token_range(guarded, prompts: list[str]) -> list[int] | None:
    """The shortest and longest benign prompt in the tokens the pipeline's text encoder reads."""
    tokenizer = guarded.family.tokenizer(guarded)
    counts = prompt_token_counts(tokenizer, prompts) if tokenizer is not None else None
    return [min(counts), max(counts)] if counts else None


def _check_guidance(guidance_scale) -> None:
    """A guidance scale the calibration file can record (the pipeline accepts any float), checked
    before any scoring rather than when the file is written."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise MemguardTypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
    if not math.isfinite(guidance_scale) or abs(guidance_scale) > 1e6:  # what a calibration file holds
        raise MemguardValueError(f"guidance_scale must be finite, |guidance_scale| <= 1e6, got {guidance_scale}")


def _shareable_name(name_or_path) -> str:
    """The model's hub id as the calibration records it; a local folder only by its own name (a full
    path can name a person or a client, and the file is meant to be shared with the model)."""
    text = str(name_or_path or "")
    if text and (os.path.isabs(text) or os.path.exists(text)):
        return os.path.basename(os.path.normpath(text))
    return text


class _FeatureCollector:
    """Stands in for a fittable detector while the benign prompts are scored: keeps every batch's
    features (what the fit needs) and judges nothing."""

    def __init__(self, detector) -> None:
        self.name, self.needs, self.default_threshold = detector.name, detector.needs, None
        self.detector = detector
        self.batches: list[dict[str, torch.Tensor]] = []

    def score(self, trace, upto_step: int) -> torch.Tensor:
        values = self.detector.features(trace, upto_step)
        if values is None:
            raise MemguardValueError(f"calibration: the signals detector {self.name!r} reads were not recorded")
        self.batches.append(values)
        return torch.zeros(trace.num_images)  # nothing is judged: calibrate() sets an unreachable threshold

    def features(self) -> dict[str, torch.Tensor]:
        """Every benign image's features, batches concatenated."""
        names = sorted(self.batches[0])
        if any(sorted(batch) != names for batch in self.batches):
            raise MemguardValueError(f"calibration: the features of {self.name!r} changed between batches")
        return {k: torch.cat([batch[k] for batch in self.batches]) for k in names}
