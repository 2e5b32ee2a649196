"""benchmarks/perturbations.py, run as a user runs it: the suite it draws, and a one-item run."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import run_script_here as run_script

KINDS = {"word_drop", "word_insert", "word_swap", "typo", "leading", "trailing", "embedded", "paraphrase"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_script("benchmarks/perturbations.py", *args)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("suite") / "suite.jsonl"
    done = _run("--write-suite", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_suite_varies_every_caption_in_every_kind_and_is_reproducible(suite, tmp_path):
    from memguard import testbed

    truth = testbed.load_truth(testbed.MODEL_DIR / "truth")
    captions = {**truth.memorized_prompts, **truth.mixed_prompts}
    assert {row["item"] for row in suite} == set(captions)
    for item, caption in captions.items():
        rows = [row for row in suite if row["item"] == item]
        assert {row["kind"] for row in rows} == KINDS, item
        assert all(row["caption"] != caption for row in rows), item  # a variant is never the caption
        prompts = [row["caption"] for row in rows if row["kind"] != "paraphrase"]
        assert len(set(prompts)) == len(prompts)
    again = tmp_path / "again.jsonl"
    assert _run("--write-suite", str(again)).returncode == 0
    assert [json.loads(line) for line in again.read_text().splitlines()] == suite


def test_embedded_and_leading_variants_keep_the_whole_caption(suite):
    from memguard import testbed

    truth = testbed.load_truth(testbed.MODEL_DIR / "truth")
    captions = {**truth.memorized_prompts, **truth.mixed_prompts}
    for row in suite:
        if row["kind"] in ("embedded", "leading", "trailing"):
            assert captions[row["item"]] in row["caption"] and len(row["caption"]) > len(captions[row["item"]])


def test_a_one_item_run_reports_each_kind_and_every_copy(tmp_path):
    out = tmp_path / "perturbations.json"
    done = _run("--items", "m01", "--variants", "1", "--seeds", "500", "--steps", "12", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["settings"]["captions"] == 1 and result["settings"]["noise_seeds"] == [500]
    assert result["settings"]["steps"] == 12 and result["settings"]["detector"] == "top_layer_entropy"
    assert set(result["by_kind"]) == KINDS and result["overall"]["images"] == 8
    total_copies = sum(kind["copies"] for kind in result["by_kind"].values())
    assert total_copies == result["overall"]["copies"]
    missed = sum(kind["missed_copies"] for kind in result["by_kind"].values())
    assert missed == len(result["missed"]) and all(not row["caught"] for row in result["missed"])
    assert 0.0 <= result["overall"]["returned_copies_any"] <= 1.0
    for row in result["judged_copies"]:  # each traced to the guard's outcome and what its re-samples applied
        assert row["returned_copy_any"] and row["returned_outcome"] != "clean"
        assert bool(row["mitigations"]) == (row["returned_outcome"] in ("resampled", "flagged", "blocked"))


def test_an_unknown_item_is_refused_by_name_before_anything_runs(tmp_path):
    out = tmp_path / "x.json"
    done = _run("--items", "zz9", "--out", str(out))
    assert done.returncode != 0 and "unknown item id(s) zz9" in done.stderr
    assert not out.exists()
