"""The testbed's training set and evaluation prompts, deterministic from a seed.

Training mixes three sources with fixed probabilities per sample: broad compositional scenes (far
more distinct image-caption pairs than the model can memorize), intended-concept scenes, and the
heavily duplicated memorized images. A sample's caption is drawn from the image's wordings and
dropped (empty) 10% of the time, so classifier-free guidance works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .concepts import CONCEPTS, ConceptScene, training_concept_scenes
from .memorized import MEMORIZED, training_images
from .scenes import POSITIONS, WORDINGS, article, random_scene, where

# Share of training samples per source; each memorized item gets MEMORIZED_SHARE / 24 (1.25%).
BROAD_SHARE, CONCEPT_SHARE, MEMORIZED_SHARE = 0.45, 0.25, 0.30
CAPTION_DROPOUT = 0.1

# The shipped calibration: the training captions' own wordings, plus one-shape scenes in wordings the model
# never trained on, since users word prompts their own way (benchmarks/calibration_wordings.py measures
# both). Neither these wordings nor their scenes' seed are the benchmarks' fresh or evaluation prompts'.
CALIBRATION_SEED, CALIBRATION_PROMPTS = 4321, 1000
OTHER_WORDINGS_SEED, OTHER_WORDINGS_PROMPTS = 55_555, 500
OTHER_WORDINGS = (
    "an illustration: {a} {size} {colour} {shape} {where} on {bg}",
    "{size} {colour} {shape}, {where}, {bg} behind it",
    "sketch of {a} {colour} {shape} {where}",
    "{bg} surface with {a} {size} {colour} {shape}",
    "icon of {a} {colour} {shape}, {size}",
    "{a} {colour} {shape} sits {where}",
)


@dataclass(frozen=True)
class TrainingSet:
    images: np.ndarray  # (N, 32, 32, 3) uint8, every distinct training image
    captions: list[tuple[str, ...]]  # per image, the captions it is shown with
    probabilities: np.ndarray  # (N,) chance that a training sample is this image
    duplicated: np.ndarray  # (N,) bool: the memorized items' duplicated images
    # The duplicated images' caption dropout; None: CAPTION_DROPOUT, like every other image. Lower, fewer
    # prompt-free samples copy them (33% at 10% on the previous, epsilon weights); at 0 guidance 7.5 overshoots
    # them (the README's testbed section measures both).
    duplicate_caption_dropout: float | None = None

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, list[str]]:
        """Indices of `batch` images and one caption for each ('' with CAPTION_DROPOUT chance, or the
        duplicated images' own rate)."""
        index = rng.choice(len(self.images), size=batch, p=self.probabilities)
        captions = []
        for i in index:
            rate = CAPTION_DROPOUT
            if self.duplicated[i] and self.duplicate_caption_dropout is not None:
                rate = self.duplicate_caption_dropout
            if rng.random() < rate:
                captions.append("")
            else:
                captions.append(self.captions[i][rng.integers(len(self.captions[i]))])
        return index, captions


def build_training_set(seed: int, n_broad: int, duplicate_caption_dropout: float | None = None) -> TrainingSet:
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(n_broad)]
    broad = [(s.render(), tuple(s.caption(w) for w in range(WORDINGS))) for s in scenes]
    concept = [(s.render(), tuple(s.captions())) for s in training_concept_scenes()]
    memorized = [
        (image, (spec.caption,), len(training_images(spec))) for spec in MEMORIZED for image in training_images(spec)
    ]
    images = np.stack([im for im, _ in broad] + [im for im, _ in concept] + [im for im, _, _ in memorized])
    captions = [c for _, c in broad] + [c for _, c in concept] + [c for _, c, _ in memorized]
    probabilities = np.concatenate(
        [
            np.full(len(broad), BROAD_SHARE / len(broad)),
            np.full(len(concept), CONCEPT_SHARE / len(concept)),
            np.array([MEMORIZED_SHARE / len(MEMORIZED) / n for _, _, n in memorized]),
        ]
    )
    duplicated = np.arange(len(images)) >= len(broad) + len(concept)
    return TrainingSet(images, captions, probabilities / probabilities.sum(), duplicated, duplicate_caption_dropout)


@dataclass(frozen=True)
class IntendedPrompt:
    prompt: str
    concept: str
    background: str
    position: str


@dataclass(frozen=True)
class EvaluationPrompts:
    novel: list[str]  # compositions with a (shape, colour) pair never seen in training, background unsaid
    intended: list[IntendedPrompt]  # a concept on a background it was never trained on
    memorized: dict[str, str]  # item id -> its training caption
    mixed: dict[str, str]


def evaluation_prompts(seed: int = 1234, n_novel: int = 25) -> EvaluationPrompts:
    rng = np.random.default_rng(seed)
    # Novel prompts describe a composition and leave the background open, as benign prompts leave
    # much of an image to the model (wordings 4-7).
    novel = [random_scene(rng, held_out=True).caption(4 + int(rng.integers(4))) for _ in range(n_novel)]
    positions = list(POSITIONS)
    intended = []
    for spec in CONCEPTS:
        for k, background in enumerate(spec.held_out_backgrounds * 2):
            position = positions[rng.integers(len(positions))]
            caption = ConceptScene(spec, background, position).caption(alias=k, wording=int(rng.integers(4)))
            intended.append(IntendedPrompt(caption, spec.name, background, position))
    return EvaluationPrompts(
        novel=novel,
        intended=intended,
        memorized={s.id: s.caption for s in MEMORIZED if s.kind != "mixed"},
        mixed={s.id: s.caption for s in MEMORIZED if s.kind == "mixed"},
    )


def calibration_prompts(seed: int = CALIBRATION_SEED, n: int = 200) -> list[str]:
    """Benign prompts for the shipped calibration: broad scenes in every wording (background named or
    not), drawn apart from the evaluation sets, so thresholds are not tuned on what is evaluated."""
    rng = np.random.default_rng(seed)
    prompts: dict[str, None] = {}  # distinct: each prompt is one sample of the calibration's guarantee
    while len(prompts) < n:
        prompts.setdefault(random_scene(rng).caption(int(rng.integers(WORDINGS))))
    return list(prompts)


def one_shape_prompts(n: int, seed: int, wordings: tuple[str, ...], distinct: bool = False) -> list[str]:
    """`n` one-shape scenes drawn from `seed`, each captioned in one of `wordings` (format fields a,
    size, colour, shape, where, bg); `distinct`: skip a prompt already drawn."""
    rng = np.random.default_rng(seed)
    prompts: list[str] = []
    seen: set[str] = set()
    while len(prompts) < n:
        scene = random_scene(rng)
        if len(scene.positions) != 1:
            continue  # the wordings describe one shape
        template = wordings[int(rng.integers(len(wordings)))]
        prompt = template.format(
            a=article(scene.size),
            size=scene.size,
            colour=scene.colour,
            shape=scene.shape,
            where=where(scene.positions[0]),
            bg=scene.background,
        )
        if not (distinct and prompt in seen):
            prompts.append(prompt)
            seen.add(prompt)
    return prompts


def other_wording_prompts(n: int = OTHER_WORDINGS_PROMPTS, seed: int = OTHER_WORDINGS_SEED) -> list[str]:
    """`n` distinct one-shape prompts, each captioned in one of OTHER_WORDINGS (distinct: each is one
    sample of a calibration's guarantee)."""
    return one_shape_prompts(n, seed, OTHER_WORDINGS, distinct=True)


def shipped_calibration_prompts() -> list[str]:
    """What `python -m memguard.testbed.calibrate` calibrates on: CALIBRATION_PROMPTS distinct prompts in
    the training wordings, then OTHER_WORDINGS_PROMPTS in OTHER_WORDINGS."""
    return calibration_prompts(n=CALIBRATION_PROMPTS) + other_wording_prompts()
