"""benchmarks/encoders.py: a tiny end-to-end run measures every encoder and writes its JSON."""

import json

from helpers import run_script_here as run_script


def test_tiny_run_measures_every_encoder(tmp_path):
    out = tmp_path / "encoders.json"
    run = run_script(
        "benchmarks/encoders.py",
        *("--count", 6, "--queries", 3, "--image-size", 48, "--repeats", 2, "--device", "cpu", "--batch-size", 4),
        *("--tiny", "--out", out),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["encoders"]) == {"pixel-32", "dinov2-small", "dinov2-base", "clip-vit-b-32", "sscd-resnet50"}
    assert result["images"] == {"protected": 6, "queries": 3, "size": 48, "format": "png"}
    assert result["weights"] == "tiny random stand-ins" and result["repeats"] == 2 and result["batch_size"] == 4
    for name, row in result["encoders"].items():
        assert row["build_images_per_s"] > 0 and row["query_images_per_s"] > 0, name
        assert len(row["build_s"]) == 2 and len(row["query_s"]) == 2
    assert result["encoders"]["clip-vit-b-32"]["dims"] == 512 and result["encoders"]["sscd-resnet50"]["dims"] == 512
    assert result["encoders"]["pixel-32"]["dims"] == 3072
