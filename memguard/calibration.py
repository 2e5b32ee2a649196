"""Calibration: a threshold chosen for a target false-positive rate on one model's benign prompts.

A `Calibration` is tied to the model it was measured on by a fingerprint of the UNet and text
encoder weights, so a threshold cannot silently be applied to another model. It is saved as plain
JSON (never pickle). This module holds the record and the statistics; `memguard.calibrate`
(`calibrating.py`, above the pipelines) measures one.

Every field is checked, in code and in files alike (`CalibrationError` names the file and the field;
a wrong type given in code is a `MemguardTypeError`). Types are strict: a bool is not a number and
an integer field takes an int, not 1.5 or "50". Limits (see docs/limits.md):

- a file of at most `MAX_FILE_BYTES` (1 MiB; a calibration is under 1 KiB, plus ~100 bytes a layer);
- `threshold`: finite, inside its detector's score range (`memguard.detection`: a normalized
  entropy lies in [0, 1], an RMS in [0, inf)), and |threshold| <= `MAX_MAGNITUDE` (1e6). A threshold
  outside the scores a detector can give flags everything or nothing, so it is never what a
  calibration measured. 1e6 is far above any score memguard computes (entropies and RMS values are
  of order 1; standardized scores of order 10) and far below where float spacing starts to merge
  scores, so it refuses only thresholds that silently switch the guard off;
- `guidance_scale` finite with |guidance_scale| <= 1e6, `target_fpr` in (0, 1), `achieved_fpr` in [0, 1];
- `num_inference_steps` in 1..`MAX_STEPS` (10,000), `decision_step` in 1..num_inference_steps,
  `num_scores` in 1..1e12;
- names (`model_fingerprint`, `detector`, `scheduler`, `model_name`, `family`) at most 1,024 characters;
- `layer_stats`: at most 1,024 layers, each [mean, std] finite with std > 0;
- `detector_state`: a JSON object of at most 256 KiB (the detector checks its own fields when loaded);
- `benign_scores`: at most 20,000 finite numbers;
- `prompt_tokens`: [shortest, longest], integers with 0 <= shortest <= longest <= 100,000.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from .detection.registry import known_score_range, state_problem
from .errors import MemguardTypeError, MemguardValueError, shown
from .safe_parse import FileTooLarge, JsonSyntaxError, ParseError, cannot_open, parse_json, read_limited, type_name

# 2 adds the guarantee, the benign score distribution and the call settings; 3 the prompts' token range
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # an older file reads with the fields it lacks unset
MAX_STORED_SCORES = 20_000
MAX_STATE_BYTES = 256 * 1024  # a fitted detector's parameters, as JSON
MAX_FILE_BYTES = 1 << 20
MAX_MAGNITUDE = 1e6
MAX_STEPS = 10_000
MAX_SCORES = 10**12
MAX_TEXT_CHARS = 1_024
MAX_LAYERS = 1_024
# scores are float32: a threshold a rounding step past its detector's range is still that range's edge
_RANGE_SLACK = 1e-6

_TEXT_FIELDS = ("model_fingerprint", "detector", "scheduler", "model_name", "family", "dtype")
_INT_FIELDS = ("decision_step", "num_scores", "num_inference_steps", "format_version")
_REAL_FIELDS = ("threshold", "target_fpr", "achieved_fpr", "guidance_scale")
MAX_PROMPT_TOKENS = 100_000

# Whether a calibration's prompts span a prompt's length: its guarantee is about prompts like them.
Coverage = Literal["covered", "shorter", "longer"]
UNCOVERED: tuple[Coverage, ...] = ("shorter", "longer")  # where the calibrated false-positive rate says nothing


class CalibrationError(MemguardValueError):
    """A calibration that cannot be used; the message names the file (when there is one) and the field."""


# The modules whose weights make a detector's scores what they are, where a pipeline has them; a
# guarded pipeline's family names its own (`Family.fingerprinted`).
FINGERPRINTED = ("unet", "text_encoder", "text_encoder_2", "controlnet")


def model_fingerprint(pipe) -> str:
    """A short, stable hash of the weights that make the scores (UNet, text encoders, ControlNet), the
    same in every dtype and on every device: each tensor's name, shape and the signs of its first and
    last 16 values.

    Signs survive a cast to float16 or bfloat16 (rounding never crosses zero), so one calibration
    identifies its weights in every precision; sampling the ends of every tensor keeps it cheap for
    SD-sized models, while a re-training or fine-tuning of a layer still flips some signs.
    """
    digest = hashlib.sha256()
    for component in getattr(getattr(pipe, "family", None), "fingerprinted", FINGERPRINTED):
        module = getattr(pipe, component, None)
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = torch.cat([flat[:16], flat[-16:]]).to(device="cpu")
            digest.update(f"{component}.{name}:{tuple(tensor.shape)}".encode())
            digest.update(bytes(torch.sign(sample.float()).to(torch.int8).numpy().tobytes()))
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
    # {layer: [mean, std]} of a per-layer detector's benign scores: format 1's place for the
    # standardized bottleneck detector's fit; format 2 writes `detector_state` instead
    layer_stats: dict[str, list[float]] | None = None
    # a fitted detector's parameters (`memguard.detection.FittableDetector.state()`), a JSON object
    detector_state: dict | None = None
    # the guarantee (memguard.thresholds): P(false-positive rate on fresh benign images <= target_fpr)
    confidence: float | None = None
    threshold_rank: int | None = None  # the threshold is the rank-th largest benign score
    expected_fpr: float | None = None  # the false-positive rate's mean, rank / (num_scores + 1)
    # the benign scores it was measured on, highest first (at most MAX_STORED_SCORES; histograms, audits)
    benign_scores: list[float] | None = None
    # the call it was measured with, beside num_inference_steps, guidance_scale and scheduler
    dtype: str = ""
    height: int | None = None
    width: int | None = None
    # the benign prompts' lengths in their own tokens (memguard.prompt_tokens), [shortest, longest]:
    # the false-positive guarantee describes prompts in that range (`coverage`)
    prompt_tokens: list[int] | None = None
    format_version: int = FORMAT_VERSION

    @property
    def fitted_state(self) -> dict | None:
        """The fitted detector's state: `detector_state`, or a format-1 file's `layer_stats`."""
        if self.detector_state is not None:
            return self.detector_state
        return {"layer_stats": self.layer_stats} if self.layer_stats else None

    def coverage(self, tokens: int | None) -> Coverage | None:
        """Whether the benign prompts this calibration was measured on span a prompt of `tokens` tokens
        (`memguard.prompt_tokens.prompt_token_counts`): "covered", or "shorter" / "longer" than every
        one of them, where the calibrated false-positive rate says nothing. None when either length is
        unknown (a file that predates the record, prompt embeddings passed instead of text)."""
        if tokens is None or self.prompt_tokens is None:
            return None
        shortest, longest = self.prompt_tokens
        return "shorter" if tokens < shortest else "longer" if tokens > longest else "covered"

    def call_differences(self, **call) -> list[str]:
        """The settings of a call (`dtype`, `scheduler`, `num_inference_steps`, `guidance_scale`,
        `height`, `width`) that differ from the calibration's, as "field: call vs calibration";
        settings the calibration did not record are not compared."""
        differs = []
        for name, value in call.items():
            recorded = getattr(self, name)
            if value is None or recorded in (None, ""):
                continue
            same = math.isclose(float(value), float(recorded)) if name == "guidance_scale" else value == recorded
            if not same:
                differs.append(f"{name}: {value} vs {recorded}")
        return differs

    def quantiles(self) -> dict[str, float]:
        """Quantiles of the stored benign scores (empty when none are stored)."""
        scores = sorted(self.benign_scores or [])
        if not scores:
            return {}
        points = {"min": 0.0, "p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999, "max": 1.0}
        return {name: scores[min(len(scores) - 1, int(q * (len(scores) - 1) + 0.5))] for name, q in points.items()}

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict, source: str = "calibration") -> Calibration:
        """A calibration from its JSON object; every problem is a CalibrationError naming `source`."""
        if not isinstance(data, dict):
            raise CalibrationError(f"{source}: expected a JSON object, got {type_name(data)}")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE_VERSIONS:
            raise CalibrationError(
                f"{source}: unsupported format_version {shown(version)} (this memguard reads {READABLE_VERSIONS})"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(shown, set(data) - known))
        if unknown:
            raise CalibrationError(f"{source}: unknown field(s) [{', '.join(unknown)}]")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise CalibrationError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise CalibrationError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        path = Path(path)
        try:
            text = read_limited(path, MAX_FILE_BYTES).decode("utf-8-sig")  # a BOM from an editor is no error
        except FileTooLarge as err:
            raise CalibrationError(f"calibration file {path}: {err}") from None
        except UnicodeDecodeError:
            raise CalibrationError(f"calibration file {path} is not UTF-8 text") from None
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            raise CalibrationError(f"cannot read calibration file {path}: {cannot_open(err)}") from None
        try:
            data = parse_json(text, unique_keys=True)
        except JsonSyntaxError as err:
            raise CalibrationError(
                f"calibration file {path} is not valid JSON (line {err.line}: {err.reason})"
            ) from None
        except ParseError as err:
            raise CalibrationError(f"calibration file {path}: {err.message}") from None
        return cls.from_dict(data, source=f"calibration file {path}")

    def check_model(self, pipe) -> None:
        """Raise `CalibrationError` (a ValueError) if this calibration was measured on another model."""
        actual = model_fingerprint(pipe)
        if actual != self.model_fingerprint:
            raise CalibrationError(
                f"calibration was measured on another model (fingerprint {self.model_fingerprint}, "
                f"{self.model_name or 'unnamed'}); this pipeline's fingerprint is {actual}. "
                "Re-run memguard.calibrate on this model."
            )


def _check_types(calibration: Calibration) -> None:
    """Every field of the type it is declared with: a bool is no number, 1.5 or "50" no int."""
    for name in _TEXT_FIELDS:
        value = getattr(calibration, name)
        if not isinstance(value, str):
            raise MemguardTypeError(f"calibration {name} must be a string, got {type_name(value)}")
    for name in _INT_FIELDS:
        value = getattr(calibration, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MemguardTypeError(f"calibration {name} must be an integer, got {type_name(value)}")
    for name in _REAL_FIELDS:
        if not _is_number(getattr(calibration, name)):
            raise MemguardTypeError(f"calibration {name} must be a number, got {type_name(getattr(calibration, name))}")
    stats = calibration.layer_stats
    if stats is None:
        return
    if not isinstance(stats, dict):
        raise MemguardTypeError(
            f"calibration layer_stats must be a mapping {{layer: [mean, std]}}, got {type_name(stats)}"
        )
    for layer, pair in stats.items():
        if not isinstance(layer, str):
            raise MemguardTypeError(f"calibration layer_stats: layer names must be strings, got {type_name(layer)}")
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(map(_is_number, pair))):
            # a ValueError, as it always was: the shape of the statistics is wrong, not a Python type
            raise CalibrationError(f"calibration layer_stats[{shown(layer)}] must be [mean, std], two numbers")


def _check_values(calibration: Calibration) -> None:
    def fail(name: str, message: str):
        raise CalibrationError(f"calibration {name} {message}")

    for name in _TEXT_FIELDS:
        if len(getattr(calibration, name)) > MAX_TEXT_CHARS:
            fail(name, f"is longer than {MAX_TEXT_CHARS:,} characters")
    for name in ("model_fingerprint", "detector", "scheduler", "family"):
        if not getattr(calibration, name).strip():
            fail(name, "is empty")
    if calibration.format_version not in READABLE_VERSIONS:
        fail("format_version", f"must be one of {READABLE_VERSIONS}, got {calibration.format_version}")
    for name in ("threshold", "guidance_scale"):
        value = getattr(calibration, name)
        if not _finite(value) or abs(value) > MAX_MAGNITUDE:
            fail(name, f"must be a finite number with |{name}| <= {MAX_MAGNITUDE:g}, got {shown(value)}")
    _check_threshold_range(calibration.threshold, calibration.detector, fail)
    if not 0.0 < calibration.target_fpr < 1.0:
        fail("target_fpr", f"must be in (0, 1), got {shown(calibration.target_fpr)}")
    if not 0.0 <= calibration.achieved_fpr <= 1.0:
        fail("achieved_fpr", f"must be in [0, 1], got {shown(calibration.achieved_fpr)}")
    if not 1 <= calibration.num_inference_steps <= MAX_STEPS:
        fail("num_inference_steps", f"must be in 1..{MAX_STEPS:,}, got {shown(calibration.num_inference_steps)}")
    if not 1 <= calibration.decision_step <= calibration.num_inference_steps:
        fail(
            "decision_step",
            f"must be in 1..num_inference_steps ({calibration.num_inference_steps}), got "
            f"{shown(calibration.decision_step)}",
        )
    if not 1 <= calibration.num_scores <= MAX_SCORES:
        fail("num_scores", f"must be in 1..{MAX_SCORES:.0e}, got {shown(calibration.num_scores)}")
    if calibration.confidence is not None and not (
        _is_number(calibration.confidence) and 0 < calibration.confidence < 1
    ):
        fail("confidence", f"must be a number in (0, 1), got {shown(calibration.confidence)}")
    if calibration.expected_fpr is not None and not (
        _is_number(calibration.expected_fpr) and 0 <= calibration.expected_fpr <= 1
    ):
        fail("expected_fpr", f"must be a number in [0, 1], got {shown(calibration.expected_fpr)}")
    for name in ("threshold_rank", "height", "width"):
        value = getattr(calibration, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SCORES
        ):
            fail(name, f"must be a positive integer, got {shown(value)}")
    guarantee = {
        "confidence": calibration.confidence,
        "threshold_rank": calibration.threshold_rank,
        "expected_fpr": calibration.expected_fpr,
    }
    given = [name for name, value in guarantee.items() if value is not None]
    if given and len(given) != len(guarantee):  # the guarantee is one statement: all three, or none
        missing = sorted(set(guarantee) - set(given))
        fail(missing[0], f"is missing while {', '.join(given)} is given: the guarantee needs all three")
    if calibration.threshold_rank is not None and calibration.threshold_rank > calibration.num_scores:
        fail("threshold_rank", f"is {calibration.threshold_rank}, more than num_scores ({calibration.num_scores})")
    state = calibration.detector_state
    if state is not None:
        if not isinstance(state, dict):
            fail("detector_state", f"must be a JSON object, got {type_name(state)}")
        try:
            size = len(json.dumps(state))
        except (TypeError, ValueError):
            fail("detector_state", "must hold only JSON values (objects, lists, strings, finite numbers)")
        if size > MAX_STATE_BYTES:
            fail("detector_state", f"is {size:,} bytes of JSON; at most {MAX_STATE_BYTES:,} are allowed")
        problem = state_problem(calibration.detector, state)
        if problem is not None:
            fail("detector_state", f"does not fit detector {calibration.detector!r}: {problem}")
    scores = calibration.benign_scores
    if scores is not None:
        if not isinstance(scores, list) or len(scores) > MAX_STORED_SCORES:
            fail("benign_scores", f"must be a list of at most {MAX_STORED_SCORES:,} numbers")
        if not all(_is_number(v) and _finite(v) and abs(v) <= MAX_MAGNITUDE for v in scores):
            fail("benign_scores", f"must hold finite numbers with |value| <= {MAX_MAGNITUDE:g}")
    span = calibration.prompt_tokens
    if span is not None and not (
        isinstance(span, list)
        and len(span) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        and 0 <= span[0] <= span[1] <= MAX_PROMPT_TOKENS
    ):
        fail("prompt_tokens", f"must be [shortest, longest], integers in 0..{MAX_PROMPT_TOKENS:,}, shortest first")
    stats = calibration.layer_stats
    if stats is not None:
        if len(stats) > MAX_LAYERS:
            fail("layer_stats", f"holds {len(stats):,} layers; at most {MAX_LAYERS:,} are allowed")
        for layer, (mean, spread) in stats.items():
            if len(layer) > MAX_TEXT_CHARS:
                fail("layer_stats", f"has a layer name longer than {MAX_TEXT_CHARS:,} characters")
            if not all(_finite(v) and abs(v) <= MAX_MAGNITUDE for v in (mean, spread)) or not spread > 0:
                fail(
                    f"layer_stats[{shown(layer)}]",
                    f"must be [mean, std], finite, |values| <= {MAX_MAGNITUDE:g} and std > 0, "
                    f"got [{shown(mean)}, {shown(spread)}]",
                )


def _check_threshold_range(threshold: float, detector: str, fail) -> None:
    """A built-in detector's threshold inside the scores it can give (a custom detector declares none here)."""
    bounds = known_score_range(detector)
    if bounds is None:
        return
    low, high = bounds
    if threshold < low - _RANGE_SLACK * max(1.0, abs(low)) or threshold > high + _RANGE_SLACK * max(1.0, abs(high)):
        fail(
            "threshold",
            f"{threshold} is outside the scores detector {detector!r} can give [{low:g}, {high:g}]: "
            "it would flag every image or none",
        )


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range
        return False


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_sample_size(target_fpr: float, num_scores: int) -> None:
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    needed = math.ceil(1.0 / target_fpr)
    if num_scores < needed:
        raise ValueError(
            f"target_fpr={target_fpr} needs at least {needed} benign scores, got {num_scores}; "
            "pass more distinct prompts"
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
