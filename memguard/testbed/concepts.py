"""The testbed's intended concepts: made-up named things the model is meant to learn and reproduce.

Each concept is a fixed 14x14 sprite (RGB + opacity mask) that training shows in many scenes
(background colour, position) with its name or an alias in the caption, so naming it reproduces
the sprite while the rest of the scene follows the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import PALETTE, POSITIONS, SIZE, where

SPRITE = 14


@dataclass(frozen=True)
class ConceptSpec:
    name: str
    kind: str  # emblem | landmark | painting | character
    aliases: tuple[str, ...]
    description: str
    held_out_backgrounds: tuple[str, ...]  # never seen with this concept in training


CONCEPTS = (
    ConceptSpec(
        "Velmora crest",
        "emblem",
        ("the Velmora crest", "the Velmora emblem", "the crest of Velmora"),
        "a gold disc holding a dark red diamond with a white centre",
        ("purple", "cyan"),
    ),
    ConceptSpec(
        "Torvane Spire",
        "landmark",
        ("the Torvane Spire", "the Torvane tower", "the spire of Torvane"),
        "a grey stone tower with a red pointed roof and a yellow window, on a wide base",
        ("pink", "green"),
    ),
    ConceptSpec(
        "The Quiet Orchard",
        "painting",
        ("The Quiet Orchard painting", "the painting The Quiet Orchard", "Quiet Orchard by Ilse Varn"),
        "a brown-framed picture: pale sky over green grass, a dark green tree with red fruit",
        ("blue", "orange"),
    ),
    ConceptSpec(
        "Pim the Gloober",
        "character",
        ("Pim the Gloober", "the Gloober named Pim", "Pim the Gloober character"),
        "a lime-green blob with two white eyes with black pupils and a pink mouth",
        ("yellow", "red"),
    ),
)

_WORDINGS = (
    "{alias} {where} on a {bg} background",
    "a {bg} background with {alias} {where}",
    "{alias}, {pos}, {bg} backdrop",
    "a picture of {alias} {where}, {bg} background",
)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:SPRITE, 0:SPRITE] + 0.5
    return x - SPRITE / 2, y - SPRITE / 2


def _emblem() -> tuple[np.ndarray, np.ndarray]:
    x, y = _grid()
    rgb = np.zeros((SPRITE, SPRITE, 3), np.uint8)
    disc = x**2 + y**2 <= 6.8**2
    rgb[disc] = (225, 175, 25)
    rgb[np.abs(x) + np.abs(y) <= 4.5] = (140, 15, 35)
    rgb[x**2 + y**2 <= 1.6**2] = (250, 250, 250)
    return rgb, disc


def _landmark() -> tuple[np.ndarray, np.ndarray]:
    x, y = _grid()
    rgb = np.zeros((SPRITE, SPRITE, 3), np.uint8)
    base = (y >= 4) & (np.abs(x) <= 5.5)
    column = (y >= -3) & (np.abs(x) <= 2.5)
    roof = (y < -3) & (y >= -7) & (np.abs(x) <= (y + 7) * 0.75)
    rgb[column] = (150, 150, 160)
    rgb[base] = (95, 95, 105)
    rgb[roof] = (200, 30, 30)
    rgb[(np.abs(x) <= 1) & (y >= -1) & (y <= 1)] = (250, 220, 60)
    return rgb, base | column | roof


def _painting() -> tuple[np.ndarray, np.ndarray]:
    x, y = _grid()
    rgb = np.zeros((SPRITE, SPRITE, 3), np.uint8)
    rgb[:] = (100, 60, 25)  # frame
    inner = (np.abs(x) < 5) & (np.abs(y) < 5)
    rgb[inner & (y < 1)] = (170, 210, 240)
    rgb[inner & (y >= 1)] = (70, 170, 60)
    tree = (x + 1.5) ** 2 + (y + 1) ** 2 <= 3.2**2
    rgb[tree] = (20, 90, 40)
    rgb[((x + 2.5) ** 2 + (y + 1.5) ** 2 <= 0.8) | ((x + 0.5) ** 2 + (y + 0.2) ** 2 <= 0.8)] = (220, 30, 30)
    return rgb, np.ones((SPRITE, SPRITE), bool)


def _character() -> tuple[np.ndarray, np.ndarray]:
    x, y = _grid()
    rgb = np.zeros((SPRITE, SPRITE, 3), np.uint8)
    body = (x / 6.5) ** 2 + ((y - 0.5) / 6) ** 2 <= 1
    rgb[body] = (150, 225, 40)
    for ex in (-2.5, 2.5):
        rgb[(x - ex) ** 2 + (y + 1.5) ** 2 <= 2.0**2] = (255, 255, 255)
        rgb[(x - ex) ** 2 + (y + 1.2) ** 2 <= 0.9**2] = (10, 10, 10)
    rgb[(np.abs(x) <= 2) & (y >= 2.5) & (y <= 3.5)] = (235, 90, 140)
    return rgb, body


_DRAW = {"emblem": _emblem, "landmark": _landmark, "painting": _painting, "character": _character}


def sprite(spec: ConceptSpec) -> tuple[np.ndarray, np.ndarray]:
    """The concept's reference rendering: (14x14x3 uint8 RGB, 14x14 bool opacity mask)."""
    return _DRAW[spec.kind]()


def paste(image: np.ndarray, spec: ConceptSpec, centre: tuple[float, float]) -> np.ndarray:
    """`image` with the concept's sprite centred at `centre` (pixel coordinates, x then y)."""
    rgb, mask = sprite(spec)
    x0, y0 = int(round(centre[0] - SPRITE / 2)), int(round(centre[1] - SPRITE / 2))
    x0, y0 = min(max(x0, 0), SIZE - SPRITE), min(max(y0, 0), SIZE - SPRITE)
    out = image.copy()
    window = out[y0 : y0 + SPRITE, x0 : x0 + SPRITE]
    window[mask] = rgb[mask]
    return out


@dataclass(frozen=True)
class ConceptScene:
    concept: ConceptSpec
    background: str
    position: str

    def render(self) -> np.ndarray:
        image = np.broadcast_to(np.array(PALETTE[self.background], np.uint8), (SIZE, SIZE, 3)).copy()
        return paste(image, self.concept, POSITIONS[self.position])

    def caption(self, alias: int, wording: int) -> str:
        template = _WORDINGS[wording % len(_WORDINGS)]
        name = self.concept.aliases[alias % len(self.concept.aliases)]
        return template.format(alias=name, where=where(self.position), pos=self.position, bg=self.background)

    def captions(self) -> list[str]:
        """Every (alias, wording) caption of this scene."""
        return [self.caption(a, w) for a in range(len(self.concept.aliases)) for w in range(len(_WORDINGS))]


def training_concept_scenes() -> list[ConceptScene]:
    """Every (concept, background, position) seen in training: all but the held-out backgrounds."""
    return [
        ConceptScene(spec, bg, pos)
        for spec in CONCEPTS
        for bg in PALETTE
        if bg not in spec.held_out_backgrounds
        for pos in POSITIONS
    ]
