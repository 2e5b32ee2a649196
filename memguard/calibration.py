"""Calibration: a threshold chosen for a target false-positive rate on one model's benign prompts.

A `Calibration` is tied to the model it was measured on by a fingerprint of the UNet and text
encoder weights, so a threshold cannot silently be applied to another model. It is saved as plain
JSON (never pickle). `calibrate()` measures one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch

FORMAT_VERSION = 1


# The modules whose weights make a detector's scores what they are, where a pipeline has them; a
# guarded pipeline's family names its own (`Family.fingerprinted`).
FINGERPRINTED = ("unet", "text_encoder", "text_encoder_2", "controlnet")


def model_fingerprint(pipe) -> str:
    """A short, stable hash of the weights that make the scores (UNet, text encoders, ControlNet):
    shapes and a sample of values.

    Sampling the head and tail of every tensor keeps this cheap for SD-sized models while any
    re-training or fine-tuning of a layer still changes it.
    """
    digest = hashlib.sha256()
    for component in getattr(getattr(pipe, "family", None), "fingerprinted", FINGERPRINTED):
        module = getattr(pipe, component, None)
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = torch.cat([flat[:16], flat[-16:]]).to(device="cpu", dtype=torch.float32)
            digest.update(f"{component}.{name}:{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Calibration:
    """A detector threshold measured on benign prompts of one model."""

    model_fingerprint: str
    threshold: float
    target_fpr: float
    decision_step: int
    detector: str
    num_scores: int
    achieved_fpr: float
    num_inference_steps: int
    guidance_scale: float
    scheduler: str
    model_name: str = ""
    family: str = "stable-diffusion"  # the pipeline family it was measured on (memguard.pipelines.families)
    # {layer: [mean, std]} of a per-layer detector's benign scores (bottleneck_entropy_standardized)
    layer_stats: dict[str, list[float]] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError(f"calibration threshold must be a finite number, got {self.threshold}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"calibration target_fpr must be in (0, 1), got {self.target_fpr}")
        if self.decision_step < 1:
            raise ValueError(f"calibration decision_step must be >= 1, got {self.decision_step}")
        if self.layer_stats is not None:
            for layer, stats in self.layer_stats.items():
                if not (isinstance(stats, (list, tuple)) and len(stats) == 2 and all(map(math.isfinite, stats))):
                    raise ValueError(f"calibration layer_stats[{layer!r}] must be [mean, std] (finite), got {stats!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict, source: str = "calibration") -> Calibration:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{source}: unsupported format_version {data.get('format_version')!r} "
                f"(this memguard reads {FORMAT_VERSION})"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ValueError(f"cannot read calibration file {path}: {err.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"calibration file {path} is not valid JSON (line {err.lineno})") from None
        return cls.from_dict(data, source=f"calibration file {path}")

    def check_model(self, pipe) -> None:
        """Raise ValueError if this calibration was measured on another model."""
        actual = model_fingerprint(pipe)
        if actual != self.model_fingerprint:
            raise ValueError(
                f"calibration was measured on another model (fingerprint {self.model_fingerprint}, "
                f"{self.model_name or 'unnamed'}); this pipeline's fingerprint is {actual}. "
                "Re-run memguard.calibrate on this model."
            )


def _check_sample_size(target_fpr: float, num_scores: int) -> None:
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    needed = math.ceil(1.0 / target_fpr)
    if num_scores < needed:
        raise ValueError(
            f"target_fpr={target_fpr} needs at least {needed} benign scores, got {num_scores}; "
            "pass more prompts or num_images_per_prompt"
        )


def threshold_for_fpr(scores: Sequence[float], target_fpr: float) -> tuple[float, float]:
    """The lowest threshold with at most `target_fpr` of `scores` strictly above it, and the rate achieved.

    An image is called memorized when its score is strictly greater than the threshold.
    """
    _check_sample_size(target_fpr, len(scores))
    finite = sorted((s for s in scores if math.isfinite(s)), reverse=True)
    if len(finite) != len(scores):
        raise ValueError("benign scores contain NaN or infinity; is the noise signal available (guidance > 1)?")
    allowed_above = math.floor(target_fpr * len(finite))
    threshold = finite[allowed_above]
    achieved = sum(s > threshold for s in finite) / len(finite)
    return float(threshold), achieved


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
    **call_kwargs,
) -> Calibration:
    """Score benign prompts at the decision step (images are not finished) and pick the threshold.

    `pipe` is a guarded pipeline or any pipeline memguard guards (wrapped for the run); `call_kwargs`
    are further arguments of its call (an img2img `image` and `strength`, a ControlNet `image`...).
    `detector` (a detector or its name) defaults to memguard's own score, "bottleneck_entropy".
    """
    from .detection import CALIBRATED_DEFAULT, get_detector
    from .pipelines import GuardedPipelineMixin, guard

    if isinstance(benign_prompts, str) or not all(isinstance(p, str) for p in benign_prompts):
        raise TypeError("benign_prompts must be a sequence of prompt strings")
    if len(benign_prompts) == 0:
        raise ValueError("benign_prompts is empty")
    _check_sample_size(target_fpr, len(benign_prompts) * num_images_per_prompt)  # before any scoring
    guarded = pipe if isinstance(pipe, GuardedPipelineMixin) else guard(pipe)
    detector = get_detector(detector if detector is not None else CALIBRATED_DEFAULT)
    if detector.needs.full_run:
        raise ValueError(f"detector {detector.name!r} scores only after the last step; the guard decides early")
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
    threshold, achieved = threshold_for_fpr(scores, target_fpr)
    return Calibration(
        model_fingerprint=model_fingerprint(guarded),
        threshold=threshold,
        target_fpr=target_fpr,
        decision_step=decision_step,
        detector=reports[0].detector,
        num_scores=len(reports),
        achieved_fpr=achieved,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        scheduler=type(guarded.scheduler).__name__,
        model_name=str(getattr(guarded, "name_or_path", "") or ""),
        family=guarded.family.name,
        layer_stats=layer_stats,
    )


class _LayerCollector:
    """Stands in for a per-layer detector during calibration: keeps every batch's per-layer scores,
    so the statistics and the standardized scores come from one pass over the benign prompts."""

    def __init__(self, detector) -> None:
        self.name, self.needs, self.default_threshold = detector.name, detector.needs, None
        self.batches: list[dict[str, torch.Tensor]] = []

    def score(self, trace, upto_step: int) -> torch.Tensor:
        from .detection.bottleneck import bottleneck_layers, layer_entropies

        values = layer_entropies(trace, upto_step, bottleneck_layers(trace))
        if values is None:
            raise ValueError("calibration: the per-layer attention signal was not recorded")
        self.batches.append(values)
        return torch.zeros(trace.num_images)  # nothing is judged: calibrate() sets an unreachable threshold

    def standardized(self) -> tuple[dict[str, list[float]], list[float]]:
        """{layer: [mean, std]} of the benign scores, and each image's mean standardized score."""
        layers = sorted(self.batches[0])
        if any(sorted(batch) != layers for batch in self.batches):
            raise ValueError("calibration: the bottleneck layers changed between batches")
        values = {k: torch.cat([batch[k] for batch in self.batches]).double() for k in layers}
        stats = {k: [float(v.mean()), float(v.std())] for k, v in values.items()}
        flat = sorted(k for k, (_, spread) in stats.items() if not spread > 0)
        if flat:
            raise ValueError(f"calibration: layer(s) {flat} score every benign prompt the same; pass varied prompts")
        scores = torch.stack([(values[k] - stats[k][0]) / stats[k][1] for k in layers]).mean(dim=0)
        return stats, scores.tolist()
