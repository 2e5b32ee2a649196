"""The shipped testbed loads offline, really memorizes, and its ground truth is complete."""

import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from memguard import GuardedStableDiffusionPipeline, GuardedStableDiffusionXLPipeline, Policy, testbed
from memguard.testbed.similarity import REPLICATION_THRESHOLD, item_similarity, replicates

GUARDED = {"testbed": GuardedStableDiffusionPipeline, "testbed-xl": GuardedStableDiffusionXLPipeline}


@pytest.fixture(scope="module", params=sorted(GUARDED))
def loaded(request):
    """(pipe, truth, name) of each shipped testbed: SD's architecture and SDXL's."""
    pipe, truth = testbed.load(model_dir=testbed.folder(request.param))
    return pipe, truth, request.param


def _generate(pipe, prompts, seed=0):
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(prompts, num_inference_steps=50, guidance_scale=7.5, generator=generators, output_type="np")
    return (out.images * 255).round().astype(np.uint8), out


def test_the_model_folder_loads_offline_with_plain_diffusers():
    pipe = StableDiffusionPipeline.from_pretrained(testbed.MODEL_DIR, local_files_only=True)
    assert type(pipe) is StableDiffusionPipeline
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert len(pipe.tokenizer) == 49408 and pipe.tokenizer.model_max_length == 77


def test_the_sdxl_model_folder_loads_offline_with_plain_diffusers():
    pipe = StableDiffusionXLPipeline.from_pretrained(testbed.XL_MODEL_DIR, local_files_only=True)
    assert type(pipe) is StableDiffusionXLPipeline
    # SDXL's conditioning: two text encoders side by side, the second's pooled output and time ids
    hidden = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.cross_attention_dim == hidden
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert len(pipe.tokenizer_2) == 49408
    weights = sum(f.stat().st_size for f in testbed.XL_MODEL_DIR.rglob("*.safetensors"))
    assert weights <= 30_000_000  # every weight file of the folder, its VAE included: <= 30 MB


def test_loading_a_folder_that_is_not_a_testbed_says_so(tmp_path):
    # A retrained testbed is loaded by folder; a wrong path must not fall back to the shipped weights.
    with pytest.raises(FileNotFoundError, match="not a testbed pipeline folder"):
        testbed.load(model_dir=tmp_path)


def test_a_retrained_folder_brings_its_own_calibration_and_truth(tmp_path):
    copy = tmp_path / "retrained"
    shutil.copytree(testbed.MODEL_DIR, copy)
    (copy / "calibration.json").unlink()  # a folder without calibration is guarded by the default threshold
    pipe, truth = testbed.load(model_dir=copy)
    assert pipe.guard_config.calibration is None
    assert {item.id for item in truth.memorized} == {item.id for item in testbed.load_truth(copy / "truth").memorized}


def test_ground_truth_covers_every_kind(loaded):
    _, truth, _ = loaded
    kinds = [item.kind for item in truth.memorized]
    assert sum(k != "mixed" for k in kinds) >= 16 and kinds.count("mixed") >= 2
    assert {"matching", "retrieval", "template"} <= set(kinds)
    assert len(truth.concepts) >= 4 and all(c.aliases for c in truth.concepts)
    assert truth.novel and truth.intended
    for item in truth.memorized:
        assert item.images.shape[1:] == (32, 32, 3)
        assert (item.layout is not None) == (item.kind == "template")
        assert (item.concept is not None) == (item.kind == "mixed")


def test_a_memorized_caption_reproduces_its_training_image_and_a_novel_prompt_does_not(loaded):
    pipe, truth, name = loaded
    assert isinstance(pipe, GUARDED[name])
    item = next(m for m in truth.memorized if m.kind == "matching")
    prompts = [truth.memorized_prompts[item.id], truth.novel[0]]
    guarded = pipe.guard_config
    pipe.guard_config = guarded.replace(policy=Policy.uniform("flag"))  # see the model as it is
    try:
        images, out = _generate(pipe, prompts)
    finally:
        pipe.guard_config = guarded
    assert item_similarity(images[0], item) >= REPLICATION_THRESHOLD
    assert out.memorization[0].action == "flagged" and out.memorization[0].intent == "unintended"
    # The shipped default (re-sample with the default mitigation) no longer returns the copy.
    resampled, out = _generate(pipe, prompts)
    assert out.memorization[0].action == "resampled" and not replicates(resampled[0], item)
    assert np.array_equal(resampled[1], images[1]) and out.memorization[1].action == "none"
    assert not any(replicates(images[1], other) for other in truth.memorized)
    assert {r.threshold_source for r in out.memorization} == {"calibration"}
    assert out.memorization[0].attempts[0].score > out.memorization[1].score
