"""What `memguard calibrate` shows an operator: the threshold and its guarantee, the prompt lengths it
describes, the benign score quantiles, the margin to known memorized prompts, and a histogram
(matplotlib, written to a PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .calibration import Calibration
from .thresholds import threshold_spread

SPREAD_SHARE = 0.9  # the share of bootstrap draws the printed threshold range holds


@dataclass(frozen=True)
class Margin:
    """Known memorized prompts scored at the calibration's settings."""

    scores: tuple[float, ...]
    caught: int  # scores strictly above the threshold

    @property
    def tpr(self) -> float:
        return self.caught / len(self.scores)

    def gap(self, calibration: Calibration) -> float:
        """The lowest memorized score minus the threshold (> 0: every one is caught)."""
        return min(self.scores) - calibration.threshold


def margin_report(calibration: Calibration, memorized_scores: Sequence[float]) -> Margin:
    finite = tuple(float(s) for s in memorized_scores if math.isfinite(s))
    if not finite:
        raise ValueError("no memorized prompt could be scored (is guidance on?)")
    return Margin(finite, sum(s > calibration.threshold for s in finite))


def summary_lines(calibration: Calibration, margin: Margin | None = None) -> list[str]:
    lines = [
        f"threshold {calibration.threshold:.6g} ({calibration.detector}, decision at step {calibration.decision_step})",
    ]
    if calibration.confidence is not None:
        lines.append(
            f"guarantee: false-positive rate on fresh benign prompts <= {calibration.target_fpr:g} with probability "
            f"{calibration.confidence:.3f} (the {_ordinal(calibration.threshold_rank)} highest of "
            f"{calibration.num_scores} benign scores; expected rate {calibration.expected_fpr:.4f})"
        )
    # resampled only when every score is stored (a large calibration keeps its highest MAX_STORED_SCORES)
    if calibration.threshold_rank is not None and len(calibration.benign_scores or ()) == calibration.num_scores:
        low, high = threshold_spread(calibration.benign_scores, calibration.threshold_rank, SPREAD_SHARE)
        lines.append(
            f"threshold spread: another {len(calibration.benign_scores)} prompts like these would put it in "
            f"{low:.6g}-{high:.6g} ({SPREAD_SHARE:.0%} of bootstrap draws); prompts scoring inside are caught or "
            "not by the draw: more prompts narrow it"
        )
    above = round(calibration.achieved_fpr * calibration.num_scores)
    lines.append(f"benign scores above it: {above} of {calibration.num_scores} ({calibration.achieved_fpr:.4f})")
    if calibration.prompt_tokens is not None:
        shortest, longest = calibration.prompt_tokens
        lines.append(
            f"benign prompts {shortest}-{longest} tokens long: the guarantee describes prompts of those lengths "
            "(reports' calibration_coverage)"
        )
    quantiles = calibration.quantiles()
    if quantiles:
        lines.append("benign quantiles: " + ", ".join(f"{k} {v:.6g}" for k, v in quantiles.items()))
    if margin is not None:
        lines.append(
            f"known memorized prompts: {margin.caught} of {len(margin.scores)} above the threshold "
            f"(TPR {margin.tpr:.3f}); margin of the lowest {margin.gap(calibration):+.4g}"
        )
    return lines


def save_histogram(calibration: Calibration, path: Path, memorized_scores: Sequence[float] | None = None) -> None:
    """The benign score distribution, the threshold, and known memorized scores if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=120)
    benign = calibration.benign_scores or []
    if benign:
        axes.hist(benign, bins=60, color="#4c72b0", alpha=0.8, label=f"benign ({len(benign)})")
    if memorized_scores:
        axes.hist(
            memorized_scores, bins=30, color="#c44e52", alpha=0.7, label=f"known memorized ({len(memorized_scores)})"
        )
    axes.axvline(calibration.threshold, color="black", linestyle="--", label=f"threshold {calibration.threshold:.4g}")
    axes.set_xlabel(f"{calibration.detector} score at step {calibration.decision_step}")
    axes.set_ylabel("images")
    title = f"target FPR {calibration.target_fpr:g}"
    if calibration.confidence is not None:
        title += f" at confidence {calibration.confidence:.2f}"
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _ordinal(n: int | None) -> str:
    if n is None:
        return "?"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
