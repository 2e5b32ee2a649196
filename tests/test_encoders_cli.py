"""`memguard index build/check --encoder` with DINOv2, CLIP and TorchScript models from tmp folders."""

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_encoders import save_clip, save_dinov2, save_torchscript
from typer.testing import CliRunner

from memguard.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def said(message: str, output: str) -> bool:
    """`message` is in the output, whatever rich's error box did to line breaks."""
    squeeze = "".join(ch for ch in output if not ch.isspace() and ch not in "│╭╮╰╯─")
    return "".join(message.split()) in squeeze


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_encoders")
    return {
        "dinov2": save_dinov2(root / "dinov2"),
        "clip": save_clip(root / "clip"),
        "torchscript": save_torchscript(root / "descriptor.pt"),
    }


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """Five random 48x40 images in a folder (one in a subfolder), and a near-duplicate of the first."""
    root = tmp_path_factory.mktemp("protected")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    (root / "set" / "sub").mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / "set" / ("sub" if i == 4 else "") / f"p{i}.png")
    near = np.clip(images[2].astype(int) + rng.integers(-15, 16, images[2].shape), 0, 255).astype(np.uint8)
    Image.fromarray(near).save(root / "near_p2.png")
    return root


@pytest.mark.parametrize("kind", ["dinov2", "torchscript"])
def test_index_build_and_check_end_to_end(models, protected, tmp_path, kind):
    spec = f"{kind}:{models[kind]}"
    index = tmp_path / "protected.faiss"
    result = run("index", "build", protected / "set", "--out", index, "--encoder", spec, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"5 images, flat index, encoder {spec} -> {index}" in result.output
    sidecar = json.loads((tmp_path / "protected.faiss.json").read_text())
    assert sidecar["encoder"] == spec and len(sidecar["encoder_fingerprint"]) == 16
    assert sidecar["ids"] == ["p0.png", "p1.png", "p2.png", "p3.png", "sub/p4.png"]
    result = run("index", "check", protected / "near_p2.png", protected / "set" / "sub", "--index", index, "--k", 3)
    assert result.exit_code == 0, result.output
    near, p4 = [json.loads(line) for line in result.output.splitlines()]
    assert near["matches"][0]["id"] == "p2.png" and near["matches"][0]["similarity"] > near["matches"][1]["similarity"]
    assert p4["matches"][0] == {"id": "sub/p4.png", "similarity": pytest.approx(1.0, abs=1e-4)}


def test_check_refuses_an_index_built_with_another_encoder(models, protected, tmp_path):
    index = tmp_path / "protected.faiss"
    assert (
        run("index", "build", protected / "set", "--out", index, "--encoder", f"dinov2:{models['dinov2']}").exit_code
        == 0
    )
    for other in (f"clip:{models['clip']}", f"dinov2:{models['dinov2']}?pool=mean", "pixel-32"):
        result = run("index", "check", protected / "near_p2.png", "--index", index, "--encoder", other)
        assert result.exit_code == 2, result.output
        assert said(f"was built with encoder 'dinov2:{models['dinov2']}', not '{other}'", result.output)
        assert said("embeddings of different encoders are not comparable", result.output)
    # the model moved: the sidecar's spec no longer loads, --encoder names where it is now
    moved = shutil.copytree(models["dinov2"], tmp_path / "moved")
    sidecar = tmp_path / "protected.faiss.json"
    sidecar.write_text(sidecar.read_text().replace(str(models["dinov2"]), str(tmp_path / "gone")))
    result = run("index", "check", protected / "near_p2.png", "--index", index)
    assert result.exit_code == 2 and said("cannot load the encoder it was built with", result.output)
    result = run("index", "check", protected / "near_p2.png", "--index", index, "--encoder", f"dinov2:{moved}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["matches"][0]["id"] == "p2.png"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dinov2:{tmp}/absent", "dinov2 encoder source '{tmp}/absent': no such folder"),
        ("dinov2:{clip}", "holds a 'clip' model, not DINOv2"),
        ("clip:{dinov2}", "holds a 'dinov2' model, not CLIP"),
        ("torchscript:{garbage}", "torch.jit.load cannot read it as TorchScript"),
        ("torchscript:{dinov2}", "no such file"),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "needs open_clip_torch and a torchvision"),
        ("sscd", "unknown encoder 'sscd'"),
    ],
)
def test_a_bad_encoder_is_one_clear_error(models, protected, tmp_path, monkeypatch, spec, message):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as where open_clip or torchvision is missing
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip archive")
    names = {key: str(value) for key, value in models.items()} | {"tmp": str(tmp_path), "garbage": str(garbage)}
    spec, message = spec.format(**names), message.format(**names)
    result = run("index", "build", protected / "set", "--out", tmp_path / "i.faiss", "--encoder", spec)
    assert result.exit_code == 2, result.output
    assert said("Invalid value for '--encoder':", result.output) and said(message, result.output)
    assert "Traceback" not in result.output and not (tmp_path / "i.faiss").exists()


def test_index_options_out_of_range_are_refused_by_name(protected, tmp_path):
    index = tmp_path / "protected.faiss"
    result = run("index", "build", protected / "set", "--out", index, "--encoder", "pixel-160")
    assert result.exit_code == 2 and said("'--encoder'", result.output)
    assert said("an index holds 1..65536", result.output)
    assert not index.exists()
    assert run("index", "build", protected / "set", "--out", index, "--encoder", "pixel-8").exit_code == 0
    for threshold in ("1.5", "-7"):
        result = run("index", "check", protected / "set", "--index", index, "--threshold", threshold)
        assert result.exit_code == 2 and said("'--threshold'", result.output), result.output
    result = run("index", "check", protected / "set", "--index", index, "--threshold", "1.0", "--k", 1)
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 5 and all(row["copied"] for row in rows)  # each protected image is its own exact copy
