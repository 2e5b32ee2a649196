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


def _noise(n: int, seed: int = 0, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((size, size, 3)).astype(np.float32) for _ in range(n)]


def test_a_failed_save_keeps_the_previous_pair_and_a_mixed_pair_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "protected.faiss"
    old, new = _noise(3, 0), _noise(3, 1)
    VerificationIndex.build(old, ["old-a", "old-b", "old-c"], PixelEncoder(8)).save(path)
    rebuilt = VerificationIndex.build(new, ["new-x", "new-y", "new-z"], PixelEncoder(8))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("pathlib.Path.write_text", disk_full)  # the sidecar cannot be written
        with pytest.raises(IndexFileError, match="cannot save the index at .*No space left"):
            rebuilt.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protected.faiss", "protected.faiss.json"]  # no .tmp
    assert VerificationIndex.load(path).search([old[0]], 1)[0][0].id == "old-a"  # the old pair, whole
    # an index file beside another save's sidecar (the same count and dims): its ids would be wrong
    rebuilt.save(tmp_path / "other.faiss")
    (tmp_path / "other.faiss").replace(path)
    with pytest.raises(IndexFileError, match="not the index file its sidecar"):
        VerificationIndex.load(path)
    with pytest.raises(IndexFileError, match="no folder"):
        rebuilt.save(tmp_path / "missing" / "x.faiss")


def test_build_refuses_what_load_would_refuse_before_encoding_anything():
    encoded = []

    class Counting(PixelEncoder):
        def encode(self, images):
            encoded.append(len(images))
            return super().encode(images)

    with pytest.raises(ValueError, match="67500-dim rows; an index holds 1..65536"):
        VerificationIndex.build(_noise(2), ["a", "b"], Counting(150))
    with pytest.raises(ValueError, match="got 3 images but 2 ids"):
        VerificationIndex.build(_noise(3), ["a", "b"], Counting(8))
    with pytest.raises(TypeError, match="ids must be a sequence of ids"):
        VerificationIndex.build(_noise(2), "ab", Counting(8))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        VerificationIndex.build(_noise(2), ["a", "b"], Counting(8), batch_size=0)
    with pytest.raises(TypeError, match="params must be an IndexParams"):
        VerificationIndex.build(_noise(2), ["a", "b"], Counting(8), params={"nprobe": 4})
    assert encoded == []


def test_thresholds_and_k_follow_one_rule_and_threshold_one_catches_identical_images():
    images = _noise(20, 2, size=32)
    index = VerificationIndex.build(images, [str(i) for i in range(20)], PixelEncoder())
    assert all(check.copied for check in index.check(images, 1.0))  # float32 cosine of a copy is ~1, not always >= 1
    assert not any(check.copied for check in index.check(_noise(5, 3, size=32), 1.0))
    for bad in (float("nan"), 5.0, -1.5):
        with pytest.raises(ValueError, match="cosine similarity in \\[-1, 1\\]"):
            index.check(images, bad)
    with pytest.raises(TypeError, match="k must be an int"):
        index.search(images, 2.5)
    with pytest.raises(TypeError, match="k must be an int"):
        index.search(images, True)
    from memguard.verify import CopyVerification

    quantile = np.quantile(np.asarray([0.5, 0.9], np.float32), 0.5)  # NumPy's float, as calibration code returns
    assert CopyVerification(index, quantile).threshold == pytest.approx(0.7)


def test_a_failed_add_leaves_the_ids_as_they_were():
    index = VerificationIndex.build(_noise(2), ["a", "b"], PixelEncoder(8))

    class Broken:
        d, ntotal = 192, 2

        def add(self, vectors):
            raise RuntimeError("faiss failed")

    index.index = Broken()
    with pytest.raises(RuntimeError):
        index.add(_noise(1, 5), ["c"])
    assert index.ids == ["a", "b"]


def test_image_arrays_and_files_are_read_as_the_picture_they_hold(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    encoder = PixelEncoder()
    reference = encoder.encode([picture])[0]
    same = [picture.astype(np.float32) / 255, picture.astype(np.uint16) * 257, np.dstack([picture, picture[..., :1]])]
    for array in same:  # float in [0, 1], 16-bit, RGBA: one picture
        assert float(encoder.encode([array])[0] @ reference) > 0.9999
    for array, message in (
        (picture.astype(np.int64), "must be uint8 \\(0-255\\), uint16"),
        (picture.astype(np.float32), "read as 0-1, got values from 0 to 255"),
        (picture.transpose(2, 0, 1).copy(), "must be \\(H, W\\), \\(H, W, 3\\) or \\(H, W, 4\\)"),
        (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
    ):
        with pytest.raises(ValueError, match=message):
            encoder.encode([array])
    with pytest.raises(TypeError, match="an image must be a path, a PIL image or a NumPy array, got Tensor"):
        encoder.encode([torch.zeros(3, 32, 32)])
    grey = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")  # a 16-bit PNG: not clipped to white
    Image.fromarray((grey / 257).round().astype(np.uint8)).save(tmp_path / "grey8.png")
    rows = encoder.encode([tmp_path / "grey16.png", tmp_path / "grey8.png"])
    assert float(rows[0] @ rows[1]) > 0.999
    turned = Image.fromarray(np.rot90(picture).copy())  # stored on its side, with an EXIF tag to turn it upright
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    turned.save(tmp_path / "camera.jpg", exif=exif, quality=100)
    Image.fromarray(picture).save(tmp_path / "upright.jpg", quality=100)
    rows = encoder.encode([tmp_path / "camera.jpg", tmp_path / "upright.jpg"])
    assert float(rows[0] @ rows[1]) > 0.99
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # over twice the limit: Pillow's decompression-bomb error
    with pytest.raises(ValueError, match="cannot read image .*upright.jpg: more pixels than Pillow's"):
        encoder.encode([tmp_path / "upright.jpg"])
