"""The testbed's duplicated items are what their kind says, so that benchmarks can score a re-sample."""

import numpy as np
import pytest

from memguard.testbed.data import build_training_set, evaluation_prompts
from memguard.testbed.memorized import MEMORIZED, layout, training_images
from memguard.testbed.scenes import HELD_OUT_PAIRS, WORDINGS
from memguard.testbed.similarity import (
    LAYOUT_THRESHOLD,
    REPLICATION_THRESHOLD,
    background_colour,
    follows_scene,
    layout_similarity,
    ssim,
)
from memguard.testbed.truth import load_truth, write_truth

COMPOSITION = [spec for spec in MEMORIZED if spec.kind == "composition"]


def test_there_are_composition_items_and_only_they_carry_a_scene():
    assert len(COMPOSITION) >= 6
    assert all((spec.scene is not None) == (spec.kind == "composition") for spec in MEMORIZED)
    assert len({spec.caption for spec in MEMORIZED}) == len(MEMORIZED)


@pytest.mark.parametrize("spec", COMPOSITION, ids=lambda spec: spec.id)
def test_a_composition_caption_is_a_wording_of_its_scene_that_names_where_everything_is(spec):
    scene = spec.scene
    # one shape (a pair's caption does not say where), a pair seen in training, the background named
    assert len(scene.positions) == 1 and (scene.shape, scene.colour) not in HELD_OUT_PAIRS
    background_named = [scene.caption(w) for w in range(WORDINGS) if scene.background in scene.caption(w)]
    assert spec.caption in background_named


@pytest.mark.parametrize("spec", COMPOSITION, ids=lambda spec: spec.id)
def test_a_composition_photo_shows_its_caption_and_is_not_the_plain_scene(spec):
    (image,) = training_images(spec)
    assert background_colour(image) == spec.scene.background
    assert follows_scene(image, spec.scene)  # a copy also follows the caption
    # a re-sample that draws the caption plainly is not a copy of the photo
    assert ssim(image, spec.scene.render()) < REPLICATION_THRESHOLD
    others = [im for other in MEMORIZED if other.id != spec.id for im in training_images(other)]
    assert max(ssim(image, other) for other in others) < REPLICATION_THRESHOLD


def test_every_duplicated_item_gets_the_same_share_of_training_samples():
    data = build_training_set(seed=0, n_broad=50)
    shares = {}
    for spec in MEMORIZED:
        captions = [i for i, c in enumerate(data.captions) if c == (spec.caption,)]
        assert captions and all(data.duplicated[i] for i in captions)
        shares[spec.id] = data.probabilities[captions].sum()
    assert np.allclose(list(shares.values()), next(iter(shares.values())))


def test_the_truth_keeps_a_composition_item_s_scene_and_photo(tmp_path):
    write_truth(tmp_path)
    truth = load_truth(tmp_path)
    for spec in COMPOSITION:
        item = truth.item(spec.id)
        assert item.kind == "composition" and item.scene == spec.scene
        assert item.captions == (spec.caption,)
        assert np.array_equal(item.images, training_images(spec))
    assert all(truth.item(spec.id).scene is None for spec in MEMORIZED if spec.kind != "composition")
    assert {spec.id for spec in COMPOSITION} <= set(truth.memorized_prompts)
    # benchmarks read a model's evaluation prompts from its truth: the same as the code's for this recipe
    assert truth.evaluation_prompts() == evaluation_prompts()


TEMPLATES = [spec for spec in MEMORIZED if spec.kind == "template"]


@pytest.mark.parametrize("spec", TEMPLATES, ids=lambda spec: spec.id)
def test_a_template_is_copied_by_any_colouring_of_its_layout_but_not_by_a_blank_image(spec):
    labels = layout(spec.seed)
    rng = np.random.default_rng(0)
    recoloured = rng.integers(0, 256, (int(labels.max()) + 1, 3)).astype(np.uint8)[labels]
    assert layout_similarity(recoloured, labels) >= LAYOUT_THRESHOLD
    # the guard blanks a blocked image: one colour, which any partition "explains", is no copy of a layout
    for value in (0, 128, 255):
        assert layout_similarity(np.full((*labels.shape, 3), value, np.uint8), labels) == 0.0
    other = layout(spec.seed + 1)
    assert layout_similarity(recoloured, other) < LAYOUT_THRESHOLD
