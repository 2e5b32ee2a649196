"""benchmarks/resample_copies.py: a two-seed run on the shipped testbed, and a bad item id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import loaded_script

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "resample_copies.py"


@pytest.fixture(scope="module")
def resample_copies():
    with loaded_script(SCRIPT, "benchmarks_resample_copies") as module:
        yield module


def test_a_short_run_counts_every_image_once(resample_copies, tmp_path, monkeypatch):
    out = tmp_path / "copies.json"
    monkeypatch.setattr("sys.argv", ["resample_copies", "--seeds", "2", "--prompts", "m01", "--out", str(out)])
    resample_copies.main()
    result = json.loads(out.read_text())
    for counts in (result["resampled"]["m01"], result["prompt_free"]):
        assert counts["images"] == 2 and counts["copies"] == len(counts["seeds_with_a_copy"])
        assert counts["copy_rate"] == counts["copies"] / 2
        assert sum(counts["copied_items"].values()) >= counts["copies"]
    assert result["resampled_copy_rate"] == result["resampled"]["m01"]["copy_rate"]


def test_an_unknown_item_id_is_refused_by_name(resample_copies, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["resample_copies", "--prompts", "zz9", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="unknown unintended item id"):
        resample_copies.main()
    assert not (tmp_path / "x.json").exists()
