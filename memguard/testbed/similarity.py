"""Measures on 32x32 testbed images: replication of a training image, presence of a concept, scene checks.

- Verbatim replication (matching, retrieval, mixed): SSIM (Gaussian window, sigma 1.5, per RGB
  channel, averaged) against the training image. At 32x32 two distinct smooth photos score well
  below REPLICATION_THRESHOLD; a copy decoded through the VAE scores near 1.
- Template replication: the layout, not the colours, is what gets copied, so the score is the share
  of the image's colour variance explained by the template's regions (R^2 of a fit that gives each
  region one flat colour). Any colouring of the layout scores ~1; other images score low.
- Concepts: masked normalized cross-correlation of the reference sprite, searched over every
  placement; the scene's background is the nearest palette colour to the median border pixel.
- Scenes (does an image draw what a caption of the broad scenes says?): the named background, and
  the pixels nearest to the named shape colour overlapping the named shape(s) at the named
  position(s) with an intersection-over-union of at least SCENE_IOU_THRESHOLD.
The benchmark (``benchmarks/testbed.py``) reports the null distributions that justify the thresholds.
"""

from __future__ import annotations

import numpy as np

from .scenes import PALETTE, POSITIONS, SIZES, Scene, shape_mask
from .truth import Concept, MemorizedItem

REPLICATION_THRESHOLD = 0.7  # SSIM
LAYOUT_THRESHOLD = 0.8  # R^2 of the template's region fit
CONCEPT_THRESHOLD = 0.7  # masked normalized cross-correlation
SCENE_IOU_THRESHOLD = 0.5  # named shape colour vs the named shape at its position


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255 if image.dtype == np.uint8 else image.astype(np.float64)


def _gaussian_blur(x: np.ndarray, sigma: float = 1.5, radius: int = 3) -> np.ndarray:
    """Separable Gaussian blur over the two spatial axes of an (H, W, C) array, edges reflected."""
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(w * padded[:, radius + o : padded.shape[1] - radius + o] for o, w in zip(offsets, kernel, strict=True))
    return sum(w * rows[radius + o : rows.shape[0] - radius + o] for o, w in zip(offsets, kernel, strict=True))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two (H, W, 3) images (uint8, or float in [0, 1])."""
    a, b = _float(a), _float(b)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = _gaussian_blur(a), _gaussian_blur(b)
    var_a = _gaussian_blur(a * a) - mu_a**2
    var_b = _gaussian_blur(b * b) - mu_b**2
    cov = _gaussian_blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def layout_similarity(image: np.ndarray, labels: np.ndarray) -> float:
    """Share of the image's colour variance explained by one flat colour per region of `labels`; 0 for
    an image of one colour (a blocked, blanked image shows no layout, though any partition "fits" it)."""
    x = _float(image).reshape(-1, 3)
    flat = labels.reshape(-1)
    total = ((x - x.mean(0)) ** 2).sum()
    if total < 1e-8:
        return 0.0
    residual = sum(((x[flat == r] - x[flat == r].mean(0)) ** 2).sum() for r in np.unique(flat))
    return float(1 - residual / total)


def item_similarity(image: np.ndarray, item: MemorizedItem) -> float:
    """How closely `image` replicates the item: layout R^2 for templates, else best SSIM to its image(s)."""
    if item.kind == "template":
        return layout_similarity(image, item.layout)
    return max(ssim(image, reference) for reference in item.images)


def replicates(image: np.ndarray, item: MemorizedItem) -> bool:
    threshold = LAYOUT_THRESHOLD if item.kind == "template" else REPLICATION_THRESHOLD
    return item_similarity(image, item) >= threshold


def replicated_items(image: np.ndarray, items) -> list[str]:
    """Ids of every duplicated training item `image` replicates (a re-sample may copy another one)."""
    return [item.id for item in items if replicates(image, item)]


def concept_match(image: np.ndarray, concept: Concept) -> tuple[float, tuple[float, float]]:
    """Best masked normalized cross-correlation of the concept's sprite over all placements, and its centre (x, y)."""
    x = _float(image)
    reference = _float(concept.reference)[concept.mask]
    reference = reference - reference.mean()
    size = concept.mask.shape[0]
    best, centre = -1.0, (0.0, 0.0)
    for top in range(x.shape[0] - size + 1):
        for left in range(x.shape[1] - size + 1):
            window = x[top : top + size, left : left + size][concept.mask]
            window = window - window.mean()
            score = float((window * reference).sum() / (np.linalg.norm(window) * np.linalg.norm(reference) + 1e-8))
            if score > best:
                best, centre = score, (left + size / 2, top + size / 2)
    return best, centre


def background_colour(image: np.ndarray) -> str:
    """Palette name nearest to the median colour of the image's 2-pixel border."""
    x = _float(image) * 255
    border = np.concatenate(
        [x[:2].reshape(-1, 3), x[-2:].reshape(-1, 3), x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3)]
    )
    median = np.median(border, axis=0)
    return min(PALETTE, key=lambda name: float(((np.array(PALETTE[name]) - median) ** 2).sum()))


def nearest_position(centre: tuple[float, float]) -> str:
    return min(
        POSITIONS, key=lambda name: (POSITIONS[name][0] - centre[0]) ** 2 + (POSITIONS[name][1] - centre[1]) ** 2
    )


def nearest_palette(image: np.ndarray) -> np.ndarray:
    """(H, W) array of palette indices (in PALETTE's order): each pixel's nearest named colour."""
    x = _float(image)[..., None, :] * 255
    colours = np.array(list(PALETTE.values()), np.float64)
    return ((x - colours) ** 2).sum(-1).argmin(-1)


def scene_shape_iou(image: np.ndarray, scene: Scene) -> float:
    """IoU of the pixels nearest to the scene's shape colour and its shape(s) drawn where the caption says."""
    expected = np.zeros(image.shape[:2], bool)
    for position in scene.positions:
        expected |= shape_mask(scene.shape, SIZES[scene.size], POSITIONS[position])
    drawn = nearest_palette(image) == list(PALETTE).index(scene.colour)
    return float((drawn & expected).sum() / max((drawn | expected).sum(), 1))


def follows_scene(image: np.ndarray, scene: Scene) -> bool:
    """Does the image draw the scene: its background colour, and its shape(s) in their colour and place?"""
    return background_colour(image) == scene.background and scene_shape_iou(image, scene) >= SCENE_IOU_THRESHOLD
