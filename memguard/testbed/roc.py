"""ROC figures of a detector's scores, memorized (positives) against not (negatives): AUC, TPR at a fixed
FPR, the curve itself. The detection benchmarks report them (benchmarks/detection.py and others)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("no scores")
    # an unavailable score (NaN) counts as "not memorized": lowest rank, as the guard treats it
    return np.where(np.isfinite(array), array, -math.inf)


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count one half)."""
    pos, neg = _clean(positives), _clean(negatives)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def tpr_at_fpr(positives: Sequence[float], negatives: Sequence[float], fpr: float) -> float:
    """The share of positives strictly above the lowest threshold that lets at most `fpr` of the
    negatives through (the guard's rule: memorized means score > threshold)."""
    pos, neg = _clean(positives), np.sort(_clean(negatives))[::-1]
    allowed = math.floor(fpr * neg.size)
    threshold = neg[allowed] if allowed < neg.size else -math.inf
    return float((pos > threshold).mean())


def roc_curve(positives: Sequence[float], negatives: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) over every distinct threshold, from (0,0) to (1,1)."""
    pos, neg = _clean(positives), _clean(negatives)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    fprs = [0.0] + [float((neg >= t).mean()) for t in thresholds]
    tprs = [0.0] + [float((pos >= t).mean()) for t in thresholds]
    return np.array(fprs), np.array(tprs)
