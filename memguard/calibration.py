"""Calibration: a threshold chosen for a target false-positive rate on one model's benign prompts.

A `Calibration` is tied to the model it was measured on by a fingerprint of the UNet and text
encoder weights, so a threshold cannot silently be applied to another model. It is saved as plain
JSON (never pickle). This module holds the record and the statistics; `memguard.calibrate`
(`calibrating.py`, above the pipelines) measures one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
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


def check_sample_size(target_fpr: float, num_scores: int) -> None:
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
    check_sample_size(target_fpr, len(scores))
    finite = sorted((s for s in scores if math.isfinite(s)), reverse=True)
    if len(finite) != len(scores):
        raise ValueError("benign scores contain NaN or infinity; is the noise signal available (guidance > 1)?")
    allowed_above = math.floor(target_fpr * len(finite))
    threshold = finite[allowed_above]
    achieved = sum(s > threshold for s in finite) / len(finite)
    return float(threshold), achieved
