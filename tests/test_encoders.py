"""Image encoders of the copy-verification index: DINOv2, CLIP vision and TorchScript models (tiny
random-weight ones saved to a tmp folder), their specs, fingerprints and errors."""

import importlib.abc
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import seeded
from PIL import Image
from tiny_encoders import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, save_clip, save_dinov2, save_torchscript

import memguard
from memguard import GuardConfig
from memguard.verify import (
    ClipVisionEncoder,
    CopyVerification,
    DinoV2Encoder,
    EncoderError,
    IndexFileError,
    OpenClipEncoder,
    TorchScriptEncoder,
    VerificationIndex,
    encoder_from_name,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny model folders and files, saved once for the module."""
    root = tmp_path_factory.mktemp("encoders")
    return {
        "dinov2": save_dinov2(root / "dinov2"),
        "dinov2_other": save_dinov2(root / "dinov2_other", seed=1),
        "dinov2_registers": save_dinov2(root / "dinov2_registers", registers=True),
        "clip": save_clip(root / "clip"),
        "clip_vision": save_clip(root / "clip_vision", full=False),
        "clip_no_projection": save_clip(root / "clip_no_projection", full=False, projection=False),
        "torchscript": save_torchscript(root / "descriptor.pt"),
        "feature_map": save_torchscript(root / "feature_map.pt", descriptors=False),
    }


def _images():
    """An image, a near-duplicate (noise of +-20 levels), and an unrelated image, 64x64."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    near = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    unrelated = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return image, near, unrelated


def _normalized(x: torch.Tensor) -> np.ndarray:
    x = x.detach().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pixel_values(image: np.ndarray, resized: tuple[int, int], box: tuple[int, int, int, int], mean, std):
    """What the model's processor config asks for, written out with PIL: bicubic resize, centre crop,
    rescale to [0, 1], per-channel normalization; (1, 3, H, W)."""
    pil = Image.fromarray(image).resize(resized, Image.Resampling.BICUBIC)
    top, left, height, width = box
    array = np.asarray(pil, np.float32)[top : top + height, left : left + width] / 255
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1)[None].copy())


def test_dinov2_preprocesses_as_its_processor_config_says_and_normalizes_rows(models):
    encoder = DinoV2Encoder(models["dinov2"])
    assert encoder.name == f"dinov2:{models['dinov2']}" and encoder.dim == 32
    image = np.random.default_rng(1).integers(0, 256, (45, 60, 3), dtype=np.uint8)  # H 45, W 60
    # shortest edge 45 -> 32, so 60 -> 42; then the central 28x28
    pixels = _pixel_values(image, (42, 32), (2, 7, 28, 28), IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        expected = _normalized(encoder.model(pixel_values=pixels).pooler_output)
    rows = encoder.encode([image, Image.fromarray(image)])
    assert rows.shape == (2, 32) and rows.dtype == np.float32
    assert np.allclose(rows, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_dinov2_pools_the_cls_token_or_the_patch_tokens(models):
    image, near, unrelated = _images()
    cls_rows = DinoV2Encoder(models["dinov2"]).encode([image, near, unrelated])
    mean_encoder = encoder_from_name(f"dinov2:{models['dinov2']}?pool=mean")
    assert isinstance(mean_encoder, DinoV2Encoder) and mean_encoder.pool == "mean"
    assert mean_encoder.name.endswith("?pool=mean")
    mean_rows = mean_encoder.encode([image, near, unrelated])
    assert not np.allclose(cls_rows, mean_rows, atol=1e-3)
    for rows in (cls_rows, mean_rows):
        assert rows[0] @ rows[1] > rows[0] @ rows[2]  # the near-duplicate is nearer than the unrelated image
    # with registers, patch tokens start after the CLS and register tokens
    registers = DinoV2Encoder(models["dinov2_registers"], pool="mean")
    pixels = registers.processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = registers.model(pixel_values=pixels).last_hidden_state
    assert tokens.shape[1] == 1 + 2 + 4
    assert np.allclose(registers.encode([image]), _normalized(tokens[:, 3:].mean(dim=1)), atol=1e-5)


def test_clip_loads_a_full_checkpoint_or_a_vision_one_and_returns_projected_embeddings(models):
    encoder = ClipVisionEncoder(models["clip"])  # text tower ignored, processor config in the legacy form
    assert encoder.dim == 16 and encoder.name == f"clip:{models['clip']}"
    image = np.random.default_rng(2).integers(0, 256, (45, 60, 3), dtype=np.uint8)
    pixels = _pixel_values(image, (42, 32), (0, 5, 32, 32), CLIP_MEAN, CLIP_STD)
    with torch.no_grad():
        expected = _normalized(encoder.model(pixel_values=pixels).image_embeds)
    assert np.allclose(encoder.encode([image]), expected, atol=1e-5)
    image, near, unrelated = _images()
    rows = encoder.encode([image, near, unrelated])
    assert rows[0] @ rows[1] > rows[0] @ rows[2]
    vision = ClipVisionEncoder(models["clip_vision"])
    assert vision.dim == 16 and vision.fingerprint != encoder.fingerprint  # other random weights


def test_torchscript_resizes_square_or_by_the_short_side_with_imagenet_normalization(models, tmp_path):
    file = models["torchscript"]
    square = TorchScriptEncoder(file)
    assert square.name == f"torchscript:{file}" and square.dim == 48 and (square.size, square.resize) == (320, "square")
    short = encoder_from_name(f"torchscript:{file}?size=48&resize=short")
    assert (short.size, short.resize) == (48, "short") and short.name == f"torchscript:{file}?size=48&resize=short"
    assert encoder_from_name(short.name).fingerprint == short.fingerprint != square.fingerprint
    wide = np.random.default_rng(3).integers(0, 256, (30, 60, 3), dtype=np.uint8)
    # square: 320x320; short: the short side 30 -> 48, the long one 60 -> 96
    assert square._pixels(wide).shape == (3, 320, 320) and short._pixels(wide).shape == (3, 48, 96)
    array = np.asarray(Image.fromarray(wide).resize((96, 48), Image.Resampling.BILINEAR), np.float32) / 255
    expected = (array - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    assert np.allclose(short._pixels(wide), expected.transpose(2, 0, 1), atol=1e-6)
    image, near, unrelated = _images()
    for encoder in (square, short):  # images of different shapes in one batch, grouped by shape
        rows = encoder.encode([image, wide, near, unrelated])
        assert rows.shape == (4, 48) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
        assert np.allclose(rows[1], encoder.encode([wide])[0], atol=1e-6)
        assert rows[0] @ rows[2] > 0.99 and rows[0] @ rows[3] < rows[0] @ rows[2] - 0.05


def test_fingerprints_follow_weights_and_preprocessing_not_the_path(models, tmp_path):
    encoder = DinoV2Encoder(models["dinov2"])
    moved = shutil.copytree(models["dinov2"], tmp_path / "moved")
    assert DinoV2Encoder(moved).fingerprint == encoder.fingerprint
    assert DinoV2Encoder(models["dinov2_other"]).fingerprint != encoder.fingerprint
    assert DinoV2Encoder(models["dinov2"], pool="mean").fingerprint != encoder.fingerprint
    other_crop = save_dinov2(tmp_path / "other_crop", crop=14)  # same weights (seed 0), other processor
    assert DinoV2Encoder(other_crop).fingerprint != encoder.fingerprint


def test_index_records_the_encoder_and_refuses_another(models, tmp_path):
    image, near, unrelated = _images()
    moved = shutil.copytree(models["dinov2"], tmp_path / "model")
    spec = f"dinov2:{moved}"
    index = VerificationIndex.build([image, unrelated], ["image", "unrelated"], spec)
    path = tmp_path / "protected.faiss"
    index.save(path)
    loaded = VerificationIndex.load(path)  # the encoder rebuilt from the sidecar's spec
    assert loaded.encoder.name == spec and loaded.encoder.fingerprint == index.encoder.fingerprint
    (check,) = loaded.check([near], threshold=0.99)
    assert check.top.id == "image" and check.copied
    with pytest.raises(
        IndexFileError,
        match=r"built with encoder 'dinov2:.*', not 'clip:.*': embeddings of different encoders are not comparable",
    ):
        VerificationIndex.load(path, f"clip:{models['clip']}")
    with pytest.raises(IndexFileError, match=r"not 'dinov2:.*\?pool=mean'"):
        VerificationIndex.load(path, DinoV2Encoder(moved, pool="mean"))
    # the same model elsewhere is the same encoder
    assert len(VerificationIndex.load(path, f"dinov2:{models['dinov2']}")) == 2
    # other weights saved where the index's model was: refused, though the spec is the same
    shutil.rmtree(moved)
    save_dinov2(moved, seed=1)
    with pytest.raises(IndexFileError, match="weights or preprocessing differ"):
        VerificationIndex.load(path)
    # the model gone: say so, and how to point at it
    shutil.rmtree(moved)
    with pytest.raises(IndexFileError, match=r"cannot load the encoder it was built with .*no such folder.*--encoder"):
        VerificationIndex.load(path)
    assert len(CopyVerification.from_file(path, 0.99, f"dinov2:{models['dinov2']}").index) == 2


def test_guarded_call_checks_copies_with_a_dinov2_index(shared_base_pipe, models):
    prompt = "a red square on a blue background"

    def generate(pipe, seed):
        return pipe(prompt, num_inference_steps=3, generator=seeded(1, seed), output_type="np")

    copied_image = generate(shared_base_pipe, 3).images[0]  # the unguarded image: what the model would copy
    _, _, unrelated = _images()
    index = VerificationIndex.build([copied_image, unrelated], ["copy-me", "other"], f"dinov2:{models['dinov2']}")
    verification = CopyVerification(index, threshold=0.9999)
    config = GuardConfig(threshold=1e9, verification=verification, policy=memguard.Policy(fallback="flag"))
    (report,) = generate(memguard.guard(shared_base_pipe, config), 3).memorization
    assert report.copy.nearest_id == "copy-me" and report.copy.similarity > 0.9999 and report.copy.copied
    assert report.action == "flagged" and "copy verification" in report.reason
    (other_sample,) = generate(memguard.guard(shared_base_pipe, config), 4).memorization
    assert not other_sample.copy.copied and other_sample.copy.similarity < 0.9999 and other_sample.action == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dinov2:{tmp}/absent", "dinov2 encoder source '{tmp}/absent': no such folder"),
        ("dinov2:{tmp}", "dinov2 encoder source '{tmp}': the folder has no config.json"),
        ("dinov2:{not_a_model}", "dinov2 encoder source '{not_a_model}': cannot load its config ("),
        ("dinov2:{torchscript}", "is a file; pass the folder that holds the model"),
        ("dinov2:{clip}", "holds a 'clip' model, not DINOv2"),
        ("clip:{dinov2}", "holds a 'dinov2' model, not CLIP"),
        ("clip:{clip_no_projection}", "lacks 1 of the weights a CLIP encoder needs (e.g. 'visual_projection.weight')"),
        ("dinov2:{dinov2}?pool=max", "DinoV2Encoder.pool must be one of ('cls', 'mean'), got 'max'"),
        ("dinov2:{dinov2}?crop=1", "unknown option 'crop' for dinov2 (known: pool)"),
        ("dinov2:{dinov2}?pool", "options after '?' are key=value pairs"),
        ("torchscript:{tmp}/absent.pt", "torchscript encoder file '{tmp}/absent.pt': no such file"),
        ("torchscript:{garbage}", "torch.jit.load cannot read it as TorchScript (PytorchStreamReader"),
        ("torchscript:{feature_map}", "must return (N, D) descriptors, returned (1, 3, 2, 2)"),
        ("torchscript:{torchscript}?size=big", "size must be a whole number of pixels, got 'big'"),
        ("torchscript:{torchscript}?size=8", "TorchScriptEncoder.size must be an int >= 16, got 8"),
        ("torchscript:{torchscript}?resize=crop", "TorchScriptEncoder.resize must be one of ('square', 'short')"),
        ("torchscript:{torchscript}?mean=0.5,0.5", "TorchScriptEncoder.mean must be 3 finite numbers"),
        ("sscd", "unknown encoder 'sscd' (expected one of: pixel-<size>, dinov2:"),
        ("dinov2:", "nothing after 'dinov2:'"),
        ("pixel-big", "the pixel encoder's size must be a number"),
        ("open_clip:ViT-B-32", "expected open_clip:<model>/<pretrained>"),
    ],
)
def test_a_bad_spec_or_model_is_one_line_naming_it(models, tmp_path, spec, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip archive")
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"hidden_size": 8}')
    names = {key: str(value) for key, value in models.items()}
    names |= {"tmp": str(tmp_path), "garbage": str(garbage), "not_a_model": str(not_a_model)}
    spec, message = spec.format(**names), message.format(**names)
    with pytest.raises(EncoderError) as raised:
        encoder_from_name(spec)
    text = str(raised.value)
    assert message in text and "\n" not in text and len(text) < 400
    assert isinstance(raised.value, ValueError)  # callers that catch ValueError keep working


def test_encoder_arguments_are_checked_by_name(models):
    with pytest.raises(EncoderError, match=r"DinoV2Encoder.batch_size must be an int >= 1, got 0"):
        DinoV2Encoder(models["dinov2"], batch_size=0)
    with pytest.raises(EncoderError, match=r"ClipVisionEncoder.device must be a torch device .* got 'gpu0'"):
        ClipVisionEncoder(models["clip"], device="gpu0")
    with pytest.raises(EncoderError, match="dinov2 encoder source must be a model folder or a Hugging Face hub id"):
        DinoV2Encoder(None)
    with pytest.raises(EncoderError, match="encoder must be an encoder spec"):
        VerificationIndex.build([np.zeros((8, 8, 3), np.uint8)], ["a"], encoder=42)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_a_device_this_torch_does_not_have_is_named(models):
    with pytest.raises(EncoderError, match="DinoV2Encoder.device is 'cuda', but this torch has no cuda device"):
        DinoV2Encoder(models["dinov2"], device="cuda")
    with pytest.raises(EncoderError, match="TorchScriptEncoder.device is 'cuda:0'"):
        TorchScriptEncoder(models["torchscript"], device="cuda:0")


def test_an_index_built_with_custom_normalization_or_a_relative_path_loads_anywhere(models, tmp_path, monkeypatch):
    # CLIP's normalization has more digits than a short float format keeps; the fingerprint has them all
    spec = f"torchscript:{models['torchscript'].name}?size=48&mean=0.48145466,0.4578275,0.40821073"
    monkeypatch.chdir(models["torchscript"].parent)  # a path relative to the working directory
    encoder = encoder_from_name(spec)
    assert encoder.name.startswith(f"torchscript:{models['torchscript']}?")  # stored resolved
    images = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(2)]
    VerificationIndex.build(images, ["a", "b"], encoder).save(tmp_path / "index.faiss")
    monkeypatch.chdir(tmp_path)
    loaded = VerificationIndex.load(tmp_path / "index.faiss")  # the encoder rebuilt from its stored spec
    assert loaded.encoder.fingerprint == encoder.fingerprint and loaded.search([images[1]], 1)[0][0].id == "b"


class _FailingImport(importlib.abc.MetaPathFinder):
    """Makes `import open_clip` fail the way a torchvision built for another torch does."""

    def find_spec(self, name, path=None, target=None):
        if name == "open_clip":
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


def test_open_clip_without_a_working_torchvision_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # not installed
    with pytest.raises(EncoderError) as missing:
        encoder_from_name("open_clip:ViT-B-32/laion2b_s34b_b79k")
    monkeypatch.delitem(sys.modules, "open_clip")
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(), *sys.meta_path])
    with pytest.raises(EncoderError) as broken:
        OpenClipEncoder()
    assert "torchvision::nms does not exist" in str(broken.value)
    for err in (missing, broken):
        text = str(err.value)
        assert text.startswith("encoder 'open_clip:ViT-B-32/laion2b_s34b_b79k' needs open_clip_torch and a torchvision")
        assert "pip install 'memguard[clip]' torchvision" in text and "clip:<folder or hub id>" in text
        assert "\n" not in text


def test_a_sidecar_written_before_fingerprints_is_matched_by_encoder_name(tmp_path):
    path = tmp_path / "old.faiss"
    VerificationIndex.build([np.full((8, 8, 3), 9, np.uint8), *_images()], ["a", "b", "c", "d"], "pixel-8").save(path)
    sidecar = tmp_path / "old.faiss.json"
    meta = json.loads(sidecar.read_text())
    del meta["encoder_fingerprint"]
    sidecar.write_text(json.dumps(meta))
    assert VerificationIndex.load(path).encoder.name == "pixel-8"
    with pytest.raises(IndexFileError, match="built with encoder 'pixel-8', not 'pixel-16'"):
        VerificationIndex.load(path, "pixel-16")
