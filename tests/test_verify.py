"""The copy-verification index (memguard.verify): retrieval, kinds, files and their checks."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from memguard import GuardConfig, testbed
from memguard.verify import (
    EncoderError,
    IndexFileError,
    IndexParams,
    OpenClipEncoder,
    PixelEncoder,
    VerificationIndex,
    encoder_from_name,
)

TRUTH = testbed.MODEL_DIR / "truth"


@pytest.fixture(scope="module")
def truth_files():
    return sorted(p for p in TRUTH.glob("*.png") if not p.name.startswith("concept_") and "layout" not in p.name)


@pytest.fixture(scope="module")
def flat_index(truth_files):
    return VerificationIndex.build(truth_files, [p.name for p in truth_files], PixelEncoder(), kind="flat")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_training_image_retrieves_itself_at_similarity_one(truth_files, kind):
    index = VerificationIndex.build(truth_files, [p.name for p in truth_files], kind=kind)
    results = index.search(truth_files, k=3)
    assert [matches[0].id for matches in results] == [p.name for p in truth_files]
    assert all(matches[0].similarity == pytest.approx(1.0, abs=1e-4) for matches in results)
    assert all(matches[1].similarity < matches[0].similarity for matches in results)


def test_a_memorized_generation_matches_its_training_image_and_a_novel_one_scores_lower(flat_index):
    pipe, truth = testbed.load()
    pipe.guard_config = GuardConfig(enabled=False)  # the raw model: what it copies is what we look for
    prompts = [truth.memorized_prompts["m01"], truth.novel[0], truth.novel[1]]
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(len(prompts))]
    images = pipe(prompts, num_inference_steps=20, generator=generators).images
    copied, *novel = flat_index.check(images, threshold=0.9, k=1)
    assert copied.top.id == "m01_0.png" and copied.top.similarity > 0.95 and copied.copied
    for check in novel:
        assert check.top.similarity < copied.top.similarity - 0.15 and not check.copied


def test_save_and_load_round_trip_through_faiss_and_a_json_sidecar(tmp_path, truth_files):
    index = VerificationIndex.build(
        truth_files[:20], [p.name for p in truth_files[:20]], kind="hnsw", params=IndexParams(hnsw_m=8)
    )
    path = tmp_path / "protected.faiss"
    index.save(path)
    sidecar = json.loads((tmp_path / "protected.faiss.json").read_text())  # plain JSON, no pickle
    assert {k: sidecar[k] for k in ("kind", "encoder", "dims", "count")} == {
        "kind": "hnsw",
        "encoder": "pixel-32",
        "dims": 3072,
        "count": 20,
    }
    assert sidecar["ids"] == [p.name for p in truth_files[:20]] and sidecar["params"]["hnsw_m"] == 8
    loaded = VerificationIndex.load(path)
    assert len(loaded) == 20 and loaded.kind == "hnsw" and loaded.params.hnsw_m == 8
    assert loaded.search([truth_files[5]], k=1)[0][0].id == truth_files[5].name
    loaded.add([truth_files[30]], ["late.png"])
    assert loaded.search([truth_files[30]], k=1)[0][0].id == "late.png"


def test_load_refuses_a_sidecar_that_disagrees_with_the_index(tmp_path, flat_index):
    path = tmp_path / "i.faiss"
    flat_index.save(path)
    sidecar_path = tmp_path / "i.faiss.json"
    good = json.loads(sidecar_path.read_text())
    for change, message in [
        ({"count": good["count"] + 1}, "does not match its sidecar"),
        ({"dims": 768}, "does not match its sidecar"),
        ({"ids": good["ids"][:-1]}, "does not match its sidecar"),
        ({"kind": "ivf"}, "its sidecar says kind 'ivf'"),
        ({"encoder": "pixel-16"}, "makes 768-dim rows"),
        ({"format_version": 99}, "unsupported format_version"),
    ]:
        sidecar_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(IndexFileError, match=message):
            VerificationIndex.load(path)
    sidecar_path.write_text(json.dumps(good))
    with pytest.raises(IndexFileError, match="built with encoder 'pixel-32', not 'pixel-16'"):
        VerificationIndex.load(path, encoder=PixelEncoder(16))
    sidecar_path.unlink()
    with pytest.raises(IndexFileError, match="has no sidecar"):
        VerificationIndex.load(path)
    with pytest.raises(IndexFileError, match="not found"):
        VerificationIndex.load(tmp_path / "absent.faiss")


def test_ivf_finds_augmented_copies_among_thousands_of_vectors():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    # 2,000 vectors: each base image shifted and noised 50 ways, so clusters are real
    images = [
        np.clip(np.roll(im, shift, axis=1).astype(int) + rng.integers(-20, 21, im.shape), 0, 255).astype(np.uint8)
        for im in base
        for shift in range(50)
    ]
    ids = [f"{i // 50}/{i % 50}" for i in range(len(images))]
    index = VerificationIndex.build(images, ids, kind="ivf", params=IndexParams(nprobe=4))
    assert index.index.nlist == 51  # default: min(4*sqrt(n), n/39)
    top = [m[0].id for m in index.search(base, k=1)]
    assert [t.split("/")[0] for t in top] == [str(i) for i in range(40)]


def test_encoders_and_inputs():
    encoder = PixelEncoder()
    array = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = Image.fromarray(array).resize((64, 64), Image.Resampling.NEAREST)
    rows = encoder.encode([array, Image.fromarray(array), big, np.zeros((32, 32, 3), np.uint8)])
    assert rows.shape == (4, 3072) and rows.dtype == np.float32
    assert np.allclose(rows[0], rows[1]) and float(rows[0] @ rows[2]) > 0.9  # a resized copy of noise still matches
    assert np.allclose(rows[3], 0)  # a blank image has no direction; it matches nothing
    assert np.linalg.norm(rows[0]) == pytest.approx(1.0)
    assert encoder_from_name("pixel-16").dim == 768
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_from_name("sscd")
    with pytest.raises(ValueError, match="image ids must be unique"):
        VerificationIndex.build([array, array], ["a", "a"])
    with pytest.raises(ValueError, match="got 2 images but 1 ids"):
        VerificationIndex.build([array, array], ["a"])


def test_open_clip_without_its_dependencies_says_what_to_install():
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(EncoderError, match=r"pip install 'memguard\[clip\]' torchvision"):
            OpenClipEncoder()
    else:
        pytest.skip("open_clip imports here; its weights would need a download")
