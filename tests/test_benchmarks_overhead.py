"""benchmarks/overhead.py: its per-call peak-memory measure, and tiny end-to-end runs of its command line."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_script_here as run_script

from memguard.testbed.peak_memory import PeakMemory

SCRIPT = "benchmarks/overhead.py"


def test_cpu_peak_memory_is_per_call():
    memory = PeakMemory("cpu")
    if not memory.per_call:
        pytest.skip("no resettable VmHWM here (not Linux, or /proc/self/clear_refs not writable)")
    # The high-water mark is the whole process's: threads left by earlier tests in the same worker may
    # allocate too, so the window's own allocation is made large enough to stand out of that noise.
    memory.start()
    x = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched, then freed inside the window
    del x
    peak, delta = memory.stop()
    assert delta >= 240
    memory.start()  # the high-water mark was reset: the next, idle window does not inherit the 256 MiB
    peak_idle, delta_idle = memory.stop()
    assert delta_idle < 128 and peak_idle < peak


def test_tiny_run_writes_every_mode(tmp_path):
    out = tmp_path / "overhead.json"
    run = run_script(
        SCRIPT, "--model", "tiny", "--detector", "uncalibrated", "--repeats", 2, "--steps", 2, "--out", out
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["detector"]["requested"] == "uncalibrated"
    assert result["detector"]["name"] == "noise_rms" and result["detector"]["threshold_source"] == "default"
    assert result["repeats"] == 2 and result["steps"] == 2
    assert set(result["modes"]) == {"flag", "resample-novel", "resample-memorized"}
    for key in ("unguarded_median_s", "guarded_flag_median_s", "median_ratio", "ratio_quartiles", "torch"):
        assert key in result
    for mode in result["modes"].values():
        assert mode["images"] == 4 and mode["ratio"]["median"] > 0
        q = mode["ratio"]["quartiles"]
        assert q[0] <= q[1] <= q[2]
    assert "decomposition" in result["modes"]["resample-memorized"]
    assert "decomposition" not in result["modes"]["flag"]


def test_calibrated_needs_a_calibration(tmp_path):
    out = tmp_path / "x.json"
    run = run_script(SCRIPT, "--model", "tiny", "--repeats", 2, "--out", out)
    assert run.returncode == 2  # argparse's usage error
    assert "model 'tiny' ships no calibration; pass --calibration PATH" in run.stderr
    assert not out.exists()
