"""Procedural 32x32 scenes: the broad, compositional part of the testbed's training distribution.

A scene is a background colour with one shape at a named position, or two shapes of one kind; its
caption names them in one of several wordings. A few (shape, colour) pairs never occur in training,
so prompts using them are compositions the model has never seen (the `novel` evaluation set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 32

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (40, 70, 210),
    "yellow": (235, 215, 40),
    "purple": (130, 50, 170),
    "orange": (240, 135, 25),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "pink": (245, 150, 195),
    "cyan": (40, 205, 215),
    "brown": (115, 70, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 4.5, "large": 7.5}  # half-extent in pixels
# Position name -> (x, y) centre; the 3x3 grid of a 32x32 image.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (8, 8),
    "top": (16, 8),
    "top right": (24, 8),
    "left": (8, 16),
    "center": (16, 16),
    "right": (24, 16),
    "bottom left": (8, 24),
    "bottom": (16, 24),
    "bottom right": (24, 24),
}
# Never rendered in training: prompts with these pairs are novel compositions.
HELD_OUT_PAIRS = frozenset({("circle", "orange"), ("square", "purple"), ("triangle", "cyan"), ("cross", "pink")})

_ONE_SHAPE = (
    "{a} {size} {colour} {shape} {where} on a {bg} background",
    "{size} {colour} {shape}, {pos}, {bg} background",
    "a {bg} background with {a} {size} {colour} {shape} {where}",
    "an image of {a} {colour} {shape} ({size}) {where}, {bg} backdrop",
)
_TWO_SHAPES = (
    "two {size} {colour} {shapes} on a {bg} background",
    "a {bg} background with two {size} {colour} {shapes}",
    "two {colour} {shapes}, {size}, on {bg}",
)
# Wordings that leave the background unsaid, as most real prompts leave most of the image open: a
# scene is captioned with these half the time, so such a caption does not pin the whole image (the
# background stays random), unlike a memorized caption, which pins every pixel.
_ONE_SHAPE_OPEN = (
    "{a} {size} {colour} {shape} {where}",
    "{size} {colour} {shape}, {pos}",
    "a picture with {a} {size} {colour} {shape} {where}",
    "an image of {a} {colour} {shape} ({size}) {where}",
)
_TWO_SHAPES_OPEN = (
    "two {size} {colour} {shapes}",
    "a picture with two {size} {colour} {shapes}",
    "two {colour} {shapes}, {size}",
)
WORDINGS = len(_ONE_SHAPE) + len(_ONE_SHAPE_OPEN)  # caption(w) for w < len(_ONE_SHAPE) names the background


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def where(position: str) -> str:
    """'at the top left', 'in the center': the position as a phrase."""
    return "in the center" if position == "center" else f"at the {position}"


def shape_mask(shape: str, half: float, centre: tuple[float, float]) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    dx, dy = x - centre[0], y - centre[1]
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= 0.85 * half) & (np.abs(dy) <= 0.85 * half)
    if shape == "triangle":
        return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)
    if shape == "cross":
        bar = half / 3
        return ((np.abs(dx) <= half) & (np.abs(dy) <= bar)) | ((np.abs(dy) <= half) & (np.abs(dx) <= bar))
    raise ValueError(f"unknown shape {shape!r}")


def solid(colour: str) -> np.ndarray:
    return np.broadcast_to(np.array(PALETTE[colour], np.uint8), (SIZE, SIZE, 3)).copy()


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    background: str
    positions: tuple[str, ...]  # one named position, or two for a pair of shapes

    def render(self) -> np.ndarray:
        return self.draw_shapes(solid(self.background))

    def draw_shapes(self, image: np.ndarray) -> np.ndarray:
        """`image` (32x32x3 uint8, changed in place) with the scene's shape(s) drawn flat where it says."""
        for position in self.positions:
            image[shape_mask(self.shape, SIZES[self.size], POSITIONS[position])] = PALETTE[self.colour]
        return image

    def caption(self, wording: int) -> str:
        """Wordings 0-3 name the background; 4-7 leave it unsaid."""
        open_ = wording % WORDINGS >= len(_ONE_SHAPE)
        fields = dict(
            size=self.size,
            colour=self.colour,
            shape=self.shape,
            shapes=self.shape + ("es" if self.shape.endswith("s") else "s"),
            bg=self.background,
        )
        if len(self.positions) == 2:
            wordings = _TWO_SHAPES_OPEN if open_ else _TWO_SHAPES
            return wordings[wording % len(wordings)].format(**fields)
        pos = self.positions[0]
        wordings = _ONE_SHAPE_OPEN if open_ else _ONE_SHAPE
        return wordings[wording % len(wordings)].format(a=article(self.size), where=where(pos), pos=pos, **fields)


def random_scene(rng: np.random.Generator, held_out: bool = False) -> Scene:
    """A scene whose (shape, colour) pair is (held_out=True) or is not (False) one of HELD_OUT_PAIRS."""
    colours = list(PALETTE)
    while True:
        shape, colour = SHAPES[rng.integers(len(SHAPES))], colours[rng.integers(len(colours))]
        if ((shape, colour) in HELD_OUT_PAIRS) == held_out:
            break
    background = colour
    while background == colour:
        background = colours[rng.integers(len(colours))]
    names = list(POSITIONS)
    count = 2 if rng.random() < 0.3 else 1
    positions = tuple(names[i] for i in rng.choice(len(names), size=count, replace=False))
    size = "small" if count == 2 or rng.random() < 0.5 else "large"
    return Scene(shape, colour, size, background, positions)
