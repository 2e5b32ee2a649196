"""What the guard tells the caller: one `MemorizationReport` per image, on `GuardedPipelineOutput`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

# "checked": signals were read and a decision taken; "unavailable": the signal does not exist for
# this call (e.g. guidance off without `unconditional_pass`); "disabled": `GuardConfig(enabled=False)`.
Status = Literal["checked", "unavailable", "disabled"]
ReportAction = Literal["none", "flagged", "blocked"]
ThresholdSource = Literal["calibration", "config", "default"]


@dataclass
class MemorizationReport:
    """The guard's verdict on one image.

    `score` is NaN when `status` is not "checked" (`to_dict` writes it as null).
    `decided_at_step` is the 1-based step whose signals (averaged over steps 1..k) were scored.
    """

    score: float
    threshold: float
    memorized: bool
    decided_at_step: int
    signals: dict[str, float] = field(default_factory=dict)
    action: ReportAction = "none"
    attempts: int = 1
    guard_seconds: float = 0.0
    status: Status = "checked"
    detector: str = ""
    threshold_source: ThresholdSource = "default"
    reason: str | None = None

    @property
    def calibrated(self) -> bool:
        return self.threshold_source == "calibration"

    def to_dict(self) -> dict:
        """A JSON-serializable dict (NaN and infinities become None)."""
        return _json_safe(asdict(self))


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class GuardedPipelineOutput(StableDiffusionPipelineOutput):
    """`StableDiffusionPipelineOutput` plus one `MemorizationReport` per image, in image order."""

    memorization: list[MemorizationReport] = field(default_factory=list)
