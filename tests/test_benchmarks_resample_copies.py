"""benchmarks/resample_copies.py: a two-seed run on the shipped testbed, and a bad item id."""

from __future__ import annotations

import json

import pytest
from helpers import run_script_here as run_script

SCRIPT = "benchmarks/resample_copies.py"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resample_copies") / "copies.json"
    run = run_script(SCRIPT, "--seeds", 2, "--prompts", "m01", "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def test_a_short_run_counts_every_image_once(short_run):
    assert short_run["seeds"] == 2 and set(short_run["resampled"]) == {"m01"}
    for counts in (short_run["resampled"]["m01"], short_run["prompt_free"]):
        assert counts["images"] == 2 and counts["copies"] == len(counts["seeds_with_a_copy"])
        assert counts["copy_rate"] == counts["copies"] / 2
        assert sum(counts["copied_items"].values()) >= counts["copies"]
    assert short_run["resampled_copy_rate"] == short_run["resampled"]["m01"]["copy_rate"]


def test_an_unknown_item_id_is_refused_by_name(tmp_path):
    out = tmp_path / "x.json"
    run = run_script(SCRIPT, "--prompts", "zz9", "--out", out)
    assert run.returncode == 1 and "unknown unintended item id(s) ['zz9']" in run.stderr
    assert not out.exists()
