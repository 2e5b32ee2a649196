"""benchmarks/mitigation.py's acceptance checks: a check over no images neither passes nor fails."""

from __future__ import annotations

import math

import pytest
from helpers import ROOT, loaded_script

SCRIPT = ROOT / "benchmarks" / "mitigation.py"


@pytest.fixture(scope="module")
def judge():
    with loaded_script(SCRIPT, "mitigation_benchmark") as module:
        yield module.judge


@pytest.mark.parametrize(
    ("value", "target", "passed"),
    [(0.0, "<= 0.01", True), (0.5, "<= 0.01", False), (0.95, ">= 0.9", True), (0.75, ">= 0.9", False)],
)
def test_a_measured_check_passes_or_fails_by_its_target(judge, value, target, passed):
    check = dict(value=value, target=target)
    judge(check)
    assert check["passed"] is passed and "measured" not in check


def test_a_check_over_no_images_is_not_measured_rather_than_failed(judge):
    # e.g. the composition checks on a model trained without composition items
    check = dict(value=float("nan"), target=">= 0.9")
    judge(check)
    assert check == dict(value=None, target=">= 0.9", measured=False)
    info = dict(value=math.nan)  # no target: still written as a JSON null, not NaN
    judge(info)
    assert info == dict(value=None, measured=False)
