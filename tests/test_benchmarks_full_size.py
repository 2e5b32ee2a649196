"""benchmarks/full_size.py's CPU smoke run: both model families at toy size, every mode timed."""

import json

from helpers import run_script_here as run_script


def test_the_smoke_run_times_every_mode_of_both_families(tmp_path):
    out = tmp_path / "full_size.json"
    run = run_script("benchmarks/full_size.py", "--smoke", "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["steps"] == 2 and report["skipped"] == []
    assert [(r["model"], r["compiled"]) for r in report["results"]] == [("sd15", False), ("sdxl", False)]
    for result in report["results"]:
        assert result["unguarded_seconds"] > 0
        for mode in ("flag", "resample"):
            timing = result["modes"][mode]
            assert timing["seconds"] > 0 and timing["ratio"] > 0
            assert timing["reports"] == ["checked/none"]  # the guard read its signals and did not act
