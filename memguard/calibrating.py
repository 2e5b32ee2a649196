"""The calibration procedure: score benign prompts with a guarded pipeline, pick the threshold.

It sits above the pipelines it runs; the record it returns and the statistics it uses live in
`calibration.py`, below everything that reads a calibration.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from .calibration import MAX_STORED_SCORES, Calibration, model_fingerprint
from .detection import CALIBRATED_DEFAULT, get_detector
from .detection.bottleneck import bottleneck_layers, layer_entropies
from .errors import MemguardTypeError, MemguardValueError
from .pipelines import GuardedPipelineMixin, guard
from .thresholds import DEFAULT_CONFIDENCE, guaranteed_threshold, required_scores

__all__ = ["calibrate"]


def calibrate(
    pipe,
    benign_prompts: Sequence[str],
    target_fpr: float = 0.01,
    *,
    decision_step: int = 1,
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
    under `target_fpr` with probability at least `confidence` (`memguard.thresholds`): a target needs
    enough scores (299 for 1% at 95%), and too few are refused, with the number, before any scoring.
    `pipe` is a guarded pipeline or any pipeline memguard guards (wrapped for the run); `call_kwargs`
    are further arguments of its call (`height`/`width`, an img2img `image` and `strength`, a ControlNet
    `image`...). `detector` (a detector or its name) defaults to memguard's own score,
    "bottleneck_entropy". Benign prompts for a real model: `memguard.prompts_corpus.benign_prompts()`.
    """
    if isinstance(benign_prompts, str) or not all(isinstance(p, str) for p in benign_prompts):
        raise MemguardTypeError("benign_prompts must be a sequence of prompt strings")
    if len(benign_prompts) == 0:
        raise MemguardValueError("benign_prompts is empty")
    needed = required_scores(target_fpr, confidence)  # before any scoring
    if len(benign_prompts) * num_images_per_prompt < needed:
        raise MemguardValueError(
            f"target_fpr={target_fpr} at confidence {confidence} needs at least {needed} benign scores, got "
            f"{len(benign_prompts)} prompt(s) x {num_images_per_prompt} image(s); pass more prompts or "
            "num_images_per_prompt"
        )
    guarded = pipe if isinstance(pipe, GuardedPipelineMixin) else guard(pipe)
    detector = get_detector(detector if detector is not None else CALIBRATED_DEFAULT)
    if detector.needs.full_run:
        raise MemguardValueError(f"detector {detector.name!r} scores only after the last step; the guard decides early")
    # A per-layer detector first needs its benign statistics: a collector keeps the per-layer scores,
    # so the statistics and the standardized scores come from the same pass.
    collector = _LayerCollector(detector) if hasattr(detector, "with_calibration") else None
    # only scores are wanted: a threshold nothing reaches, so no image is judged or re-sampled
    config = guarded.guard_config.replace(
        enabled=True,
        calibration=None,
        threshold=sys.float_info.max,
        decision_step=decision_step,
        detector=collector or detector,
    )
    reports = guarded.score(
        list(benign_prompts),
        config=config,
        num_images_per_prompt=num_images_per_prompt,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        **call_kwargs,
    )
    scores, layer_stats = [r.score for r in reports], None
    if collector is not None:
        layer_stats, scores = collector.standardized()
    choice = guaranteed_threshold(scores, target_fpr, confidence)
    height, width = guarded.family.resolution(guarded, call_kwargs)
    ranked = sorted(scores, reverse=True)
    return Calibration(
        model_fingerprint=model_fingerprint(guarded),
        threshold=choice.threshold,
        target_fpr=target_fpr,
        decision_step=decision_step,
        detector=reports[0].detector,
        num_scores=len(reports),
        achieved_fpr=choice.empirical_fpr,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        scheduler=type(guarded.scheduler).__name__,
        model_name=str(getattr(guarded, "name_or_path", "") or ""),
        family=guarded.family.name,
        layer_stats=layer_stats,
        confidence=round(choice.confidence, 6),
        threshold_rank=choice.rank,
        expected_fpr=round(choice.expected_fpr, 6),
        benign_scores=[float(f"{v:.7g}") for v in ranked[:MAX_STORED_SCORES]],
        dtype=str(guarded.family.denoiser(guarded).dtype).removeprefix("torch."),
        height=height,
        width=width,
    )


class _LayerCollector:
    """Stands in for a per-layer detector during calibration: keeps every batch's per-layer scores,
    so the statistics and the standardized scores come from one pass over the benign prompts."""

    def __init__(self, detector) -> None:
        self.name, self.needs, self.default_threshold = detector.name, detector.needs, None
        self.batches: list[dict[str, torch.Tensor]] = []

    def score(self, trace, upto_step: int) -> torch.Tensor:
        values = layer_entropies(trace, upto_step, bottleneck_layers(trace))
        if values is None:
            raise MemguardValueError("calibration: the per-layer attention signal was not recorded")
        self.batches.append(values)
        return torch.zeros(trace.num_images)  # nothing is judged: calibrate() sets an unreachable threshold

    def standardized(self) -> tuple[dict[str, list[float]], list[float]]:
        """{layer: [mean, std]} of the benign scores, and each image's mean standardized score."""
        layers = sorted(self.batches[0])
        if any(sorted(batch) != layers for batch in self.batches):
            raise MemguardValueError("calibration: the bottleneck layers changed between batches")
        values = {k: torch.cat([batch[k] for batch in self.batches]).double() for k in layers}
        stats = {k: [float(v.mean()), float(v.std())] for k, v in values.items()}
        flat = sorted(k for k, (_, spread) in stats.items() if not spread > 0)
        if flat:
            raise MemguardValueError(
                f"calibration: layer(s) {flat} score every benign prompt the same; pass varied prompts"
            )
        scores = torch.stack([(values[k] - stats[k][0]) / stats[k][1] for k in layers]).mean(dim=0)
        return stats, scores.tolist()
