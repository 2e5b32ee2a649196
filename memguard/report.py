"""What the guard tells the caller: one `MemorizationReport` per image, on `GuardedPipelineOutput`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from .calibration import Coverage

# "checked": signals were read and a decision taken; "unavailable": the signal does not exist for
# this call (e.g. guidance off without `unconditional_pass`); "disabled": `GuardConfig(enabled=False)`.
Status = Literal["checked", "unavailable", "disabled", "error"]
# What the guard did. "none": nothing (not memorized, or only observed); "allowed": memorized as the
# prompt asked (intended); "resampled": the returned image is a re-sample; "flagged"/"blocked": per
# policy or fallback.
ReportAction = Literal["none", "allowed", "flagged", "resampled", "blocked"]
# One name per outcome, the same in the report (`outcome`), the CLI and the metrics' `outcome` label.
Outcome = Literal[
    "clean", "intended", "observed", "flagged", "resampled", "blocked", "unavailable", "disabled", "error"
]
OUTCOMES: tuple[str, ...] = (
    "clean",  # checked, not memorized
    "intended",  # memorized as the prompt asked: allowed
    "observed",  # memorized by an uncalibrated default threshold: reported, the image left untouched
    "flagged",
    "resampled",
    "blocked",
    "unavailable",  # the signal does not exist for this call (guidance off)
    "disabled",  # GuardConfig(enabled=False)
    "error",  # the guard failed and on_error="fail_open" returned the image
)
Intent = Literal["none", "intended", "unintended", "mixed"]
ThresholdSource = Literal["calibration", "config", "default"]


@dataclass
class Trigger:
    """A span of the prompt that carries the signal: characters [start, end), its share of the
    attributed signal, and the registered concept it names (`intended`: allowed and asked for).

    `text` is the span's words: kept out of repr (a report printed or logged would quote the prompt)
    and out of `to_dict()` unless `include_text=True`."""

    text: str = field(repr=False)
    start: int
    end: int
    share: float
    concept: str | None = None
    intended: bool = False


@dataclass
class CopyFinding:
    """Copy verification of one finished image (`GuardConfig.verification`): the id of the nearest
    protected image, its cosine similarity, and whether it reached the verification threshold."""

    nearest_id: str
    similarity: float
    copied: bool


@dataclass
class Attempt:
    """One generation of this image: the first (mitigation None) or a re-sample."""

    score: float
    memorized: bool
    intent: Intent
    mitigation: str | None = None
    stopped_at_step: int | None = None  # the loop was ended early at this step (not finished)
    copied: bool | None = None  # copy verification of the finished attempt (None: not checked)


@dataclass
class MemorizationReport:
    """The guard's verdict on one image.

    `score` is the decision score of the caller's generation: the one that caused the action (NaN
    when `status` is not "checked"; `to_dict` writes it as null). `decided_at_step` is the 1-based step
    whose signals (averaged over steps 1..k) were scored. `score`, `memorized`, `signals`, `intent`,
    `triggers`, `residual_score` and `reference_score` all describe that decision; for a re-sampled
    image, `returned_score` is the returned re-sample's own score (each attempt's is in `attempts`).
    `outcome` names what happened in one word, as the CLI and the metrics do.
    """

    score: float
    threshold: float
    memorized: bool
    decided_at_step: int
    signals: dict[str, float] = field(default_factory=dict)
    action: ReportAction = "none"
    intent: Intent = "none"
    triggers: list[Trigger] = field(default_factory=list)
    residual_score: float | None = None  # the score with intended spans replaced by stand-ins (intent/resolver.py)
    reference_score: float | None = None  # mixed: the score of the intended spans alone
    attempts: list[Attempt] = field(default_factory=list)
    guard_seconds: float = 0.0
    status: Status = "checked"
    detector: str = ""
    threshold_source: ThresholdSource = "default"
    reason: str | None = None
    copy: CopyFinding | None = None  # set when GuardConfig.verification checked the returned image
    returned_score: float | None = None  # re-sampled images: the returned re-sample's own score
    # whether the calibration's benign prompts span this prompt's length (Calibration.coverage): None
    # without a calibrated threshold that records them, or for prompt embeddings
    calibration_coverage: Coverage | None = None

    @property
    def outcome(self) -> Outcome:
        """clean, intended, observed, flagged, resampled, blocked, unavailable, disabled or error."""
        if self.status != "checked" and self.action == "none":
            return self.status
        if self.action == "none":
            return "observed" if self.memorized else "clean"
        return "intended" if self.action == "allowed" else self.action

    @property
    def resamples(self) -> int:
        """Re-samples made for this image (0 when the first generation was kept)."""
        return max(len(self.attempts) - 1, 0)

    @property
    def calibrated(self) -> bool:
        return self.threshold_source == "calibration"

    def to_dict(self, *, include_text: bool = False) -> dict:
        """A JSON-serializable dict (NaN and infinities become None).

        Trigger spans keep their character offsets but not their text unless `include_text=True`:
        a serialized report is what ends up in logs, and prompts stay out of logs by default.
        """
        data = _json_safe(asdict(self))
        data["outcome"] = self.outcome
        if not include_text:
            for trigger in data["triggers"]:
                trigger.pop("text", None)
        return data


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
