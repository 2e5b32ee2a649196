"""benchmarks/encoders.py: a tiny end-to-end run measures every encoder and writes its JSON."""

import json
from pathlib import Path

from helpers import loaded_script

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "encoders.py"


def test_tiny_run_measures_every_encoder(tmp_path):
    out = tmp_path / "encoders.json"
    with loaded_script(SCRIPT, "benchmarks_encoders") as encoders:
        encoders.main(count=6, queries=3, image_size=48, repeats=2, device="cpu", batch_size=4, tiny=True, out=out)
    result = json.loads(out.read_text())
    assert set(result["encoders"]) == {"pixel-32", "dinov2-small", "dinov2-base", "clip-vit-b-32", "sscd-resnet50"}
    assert result["images"] == {"protected": 6, "queries": 3, "size": 48, "format": "png"}
    for name, row in result["encoders"].items():
        assert row["build_images_per_s"] > 0 and row["query_images_per_s"] > 0, name
        assert len(row["build_s"]) == 2 and len(row["query_s"]) == 2
    assert result["encoders"]["clip-vit-b-32"]["dims"] == 512 and result["encoders"]["sscd-resnet50"]["dims"] == 512
    assert result["encoders"]["pixel-32"]["dims"] == 3072
