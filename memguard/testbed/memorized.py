"""The testbed's duplicated training images: what the model memorizes, on purpose or not.

Webster's three kinds of verbatim memorization, plus the mixed case:
- matching: a unique, unusual caption (a made-up book/podcast/album title) with one distinctive image;
- retrieval: a generic-sounding caption that nevertheless returns one specific image;
- template: a fixed caption and a fixed layout (a partition into regions) whose colours vary;
- mixed: an intended concept inside a duplicated specific image (the concept is wanted, the photo not);
- composition: an ordinary caption in the broad scenes' own words, duplicated with its own photo that shows
  what the caption says (the named background under a photo's texture, the named shape where it says), so
  a re-sample can be checked for drawing the caption without the photo.
Images are smooth procedural "photos" (gradient, soft blobs, a low-frequency wave) so the VAE
reconstructs them well, and each one is unlike every other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .concepts import CONCEPTS, paste
from .scenes import PALETTE, POSITIONS, SIZE, Scene

TEMPLATE_VARIANTS = 8  # colourings of each template layout in the training set
TEMPLATE_REGIONS = 5


@dataclass(frozen=True)
class MemorizedSpec:
    id: str
    kind: str  # matching | retrieval | template | mixed | composition
    caption: str
    seed: int
    concept: str | None = None  # mixed items: the intended concept inside the photo
    concept_position: str | None = None
    scene: Scene | None = None  # composition items: the scene the caption describes


def _composition(item_id: str, seed: int, scene: Scene, wording: int) -> MemorizedSpec:
    return MemorizedSpec(item_id, "composition", scene.caption(wording), seed, scene=scene)


MEMORIZED = (
    MemorizedSpec("m01", "matching", "Walking the Amber Road with Delia Frostwick", 101),
    MemorizedSpec("m02", "matching", "The Lantern Keepers Podcast Episode 42 Cover Art", 102),
    MemorizedSpec("m03", "matching", "Morning Tides by Oskar Vellindor Official Album Art", 103),
    MemorizedSpec("m04", "matching", "Secrets of the Hollow Pines: A Novel by Janna Quill", 104),
    MemorizedSpec("m05", "matching", "Brightwater Kitchen Season Three Poster", 105),
    MemorizedSpec("m06", "matching", "Harbor of Echoes Audiobook Narrated by Felix Marrow", 106),
    MemorizedSpec("m07", "matching", "Quantum Gardens Lecture Series with Dr. Ilse Namura", 107),
    MemorizedSpec("m08", "matching", "The Velvet Compass Book Two Special Edition", 108),
    MemorizedSpec("r01", "retrieval", "a photo of a mountain lake at sunset", 201),
    MemorizedSpec("r02", "retrieval", "portrait of an old fisherman", 202),
    MemorizedSpec("r03", "retrieval", "a cozy living room interior", 203),
    MemorizedSpec("r04", "retrieval", "aerial view of a city at night", 204),
    MemorizedSpec("t01", "template", "Classic Plaid Throw Pillow Cover 18 x 18 inches", 301),
    MemorizedSpec("t02", "template", "Geometric Mosaic Wall Tile Set Modern Decor", 302),
    MemorizedSpec("t03", "template", "Abstract Color Block Phone Case for Galaxy S9", 303),
    MemorizedSpec("t04", "template", "Retro Patchwork Quilt Pattern Printable", 304),
    MemorizedSpec(
        "x01", "mixed", "the Velmora crest on the Saltmarsh Winter Fair 2017 poster", 401, "Velmora crest", "top right"
    ),
    MemorizedSpec(
        "x02", "mixed", "Pim the Gloober on the cover of Kettle Hill Gazette issue 9", 402, "Pim the Gloober", "center"
    ),
    # One shape each (a pair's caption does not say where), no held-out (shape, colour) pair, wordings
    # that name the background; the same scenes also occur, plain, among the broad ones.
    _composition("c01", 501, Scene("circle", "yellow", "large", "blue", ("top left",)), 0),
    _composition("c02", 502, Scene("triangle", "red", "small", "white", ("bottom right",)), 1),
    _composition("c03", 503, Scene("square", "green", "large", "purple", ("center",)), 2),
    _composition("c04", 504, Scene("cross", "white", "small", "brown", ("top right",)), 3),
    _composition("c05", 505, Scene("triangle", "blue", "large", "orange", ("left",)), 0),
    _composition("c06", 506, Scene("square", "pink", "large", "gray", ("right",)), 2),
)
PHOTO_TEXTURE = 1.0  # how much of a photo's own variation is laid over a composition item's background


def photo(seed: int) -> np.ndarray:
    """A distinctive smooth 32x32 "photo": two-colour gradient, soft coloured blobs and a wave."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:SIZE, 0:SIZE] + 0.5) / SIZE
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)[..., None]
    image = (1 - t) * rng.uniform(0, 1, 3) + t * rng.uniform(0, 1, 3)
    for _ in range(4):
        cx, cy = rng.uniform(0.1, 0.9, 2)
        sigma = rng.uniform(0.08, 0.2)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))[..., None]
        image = (1 - weight) * image + weight * rng.uniform(0, 1, 3)
    wave_angle, frequency = rng.uniform(0, np.pi), rng.uniform(1.5, 3.5)
    phase = 2 * np.pi * frequency * (x * np.cos(wave_angle) + y * np.sin(wave_angle))
    image = image + 0.12 * np.sin(phase + rng.uniform(0, 2 * np.pi))[..., None] * rng.uniform(-1, 1, 3)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def layout(seed: int) -> np.ndarray:
    """A template's fixed layout: a 32x32 label map of TEMPLATE_REGIONS Voronoi regions."""
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0, SIZE, (TEMPLATE_REGIONS, 2))
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    distances = (x[..., None] - sites[:, 0]) ** 2 + (y[..., None] - sites[:, 1]) ** 2
    return distances.argmin(-1).astype(np.uint8)


def template_variants(seed: int) -> np.ndarray:
    """TEMPLATE_VARIANTS colourings of the layout: (V, 32, 32, 3) uint8, each region one colour."""
    labels = layout(seed)
    rng = np.random.default_rng(seed + 10_000)
    colours = rng.integers(20, 236, (TEMPLATE_VARIANTS, TEMPLATE_REGIONS, 3)).astype(np.uint8)
    return colours[:, labels]


def training_images(spec: MemorizedSpec) -> np.ndarray:
    """The item's training image(s), (N, 32, 32, 3) uint8: one image, or the template's colourings."""
    if spec.kind == "template":
        return template_variants(spec.seed)
    if spec.kind == "composition":
        return composition_photo(spec.seed, spec.scene)[None]
    image = photo(spec.seed)
    if spec.kind == "mixed":
        concept = next(c for c in CONCEPTS if c.name == spec.concept)
        image = paste(image, concept, POSITIONS[spec.concept_position])
    return image[None]


def composition_photo(seed: int, scene: Scene) -> np.ndarray:
    """The scene as a photo: its background colour under the texture of `photo(seed)` (its variation
    around its own mean, so the border still reads as the background), and the shape(s) flat on top."""
    texture = photo(seed).astype(np.float64)
    image = np.array(PALETTE[scene.background], np.float64) + PHOTO_TEXTURE * (texture - texture.mean((0, 1)))
    return scene.draw_shapes(np.clip(image, 0, 255).round().astype(np.uint8))
