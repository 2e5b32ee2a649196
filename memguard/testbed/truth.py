"""Ground truth of the testbed model, shipped next to its weights as ``truth/truth.json`` + PNGs.

`write_truth` renders it from the code that generated the training data; `load_truth` reads it back
into typed dataclasses, so users need neither the generator nor the training run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .concepts import CONCEPTS, sprite
from .data import EvaluationPrompts, IntendedPrompt, evaluation_prompts
from .memorized import MEMORIZED, TEMPLATE_REGIONS, TEMPLATE_VARIANTS, layout, training_images
from .scenes import Scene

TRUTH_FILE = "truth.json"


@dataclass(frozen=True)
class MemorizedItem:
    id: str
    kind: str  # "matching" | "retrieval" | "template" | "mixed" | "composition"
    captions: tuple[str, ...]  # training caption(s)
    image_paths: tuple[Path, ...]  # the training image(s) it reproduces (templates: every colouring)
    images: np.ndarray  # (N, 32, 32, 3) uint8, the same images
    layout_path: Path | None  # templates: label map PNG (pixel value = region index)
    layout: np.ndarray | None  # templates: (32, 32) uint8 region labels
    colour_variation: str | None  # templates: how the colours vary between copies
    concept: str | None  # mixed: the intended concept inside the duplicated image
    scene: Scene | None = None  # composition: the scene its caption describes (what a re-sample should draw)


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str
    aliases: tuple[str, ...]
    description: str
    reference_path: Path  # RGBA PNG, alpha = the concept's shape
    reference: np.ndarray  # (14, 14, 3) uint8
    mask: np.ndarray  # (14, 14) bool


@dataclass(frozen=True)
class Truth:
    memorized: tuple[MemorizedItem, ...]  # memorized and mixed items
    concepts: tuple[Concept, ...]
    novel: tuple[str, ...]
    intended: tuple[IntendedPrompt, ...]
    memorized_prompts: dict[str, str]  # item id -> caption
    mixed_prompts: dict[str, str]

    def item(self, item_id: str) -> MemorizedItem:
        return next(m for m in self.memorized if m.id == item_id)

    def concept(self, name: str) -> Concept:
        return next(c for c in self.concepts if c.name == name)

    def evaluation_prompts(self) -> EvaluationPrompts:
        """The evaluation prompts this model's truth was written with (a model trained on an older
        recipe keeps its own items, whatever today's code would write)."""
        return EvaluationPrompts(
            novel=list(self.novel),
            intended=list(self.intended),
            memorized=dict(self.memorized_prompts),
            mixed=dict(self.mixed_prompts),
        )


def _save_png(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array).save(path)
    return path.name


def write_truth(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for spec in MEMORIZED:
        images = training_images(spec)
        entry = dict(id=spec.id, kind=spec.kind, captions=[spec.caption], concept=spec.concept)
        entry["images"] = [_save_png(im, folder / f"{spec.id}_{k}.png") for k, im in enumerate(images)]
        if spec.kind == "template":
            entry["layout"] = _save_png(layout(spec.seed), folder / f"{spec.id}_layout.png")
            entry["colour_variation"] = (
                f"{TEMPLATE_REGIONS} Voronoi regions, each one flat colour; the colours are drawn at random "
                f"per copy ({TEMPLATE_VARIANTS} colourings in training), the layout never changes"
            )
        if spec.scene is not None:
            entry["scene"] = asdict(spec.scene)
        items.append(entry)
    concepts = []
    for spec in CONCEPTS:
        rgb, mask = sprite(spec)
        rgba = np.concatenate([rgb, (mask * 255).astype(np.uint8)[..., None]], axis=-1)
        concepts.append(
            dict(
                name=spec.name,
                kind=spec.kind,
                aliases=list(spec.aliases),
                description=spec.description,
                reference=_save_png(rgba, folder / f"concept_{spec.kind}.png"),
            )
        )
    prompts = evaluation_prompts()
    payload = dict(
        memorized=items,
        concepts=concepts,
        prompts=dict(
            novel=prompts.novel,
            intended=[asdict(p) for p in prompts.intended],
            memorized=prompts.memorized,
            mixed=prompts.mixed,
        ),
    )
    (folder / TRUTH_FILE).write_text(json.dumps(payload, indent=1))


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _scene(fields: dict | None) -> Scene | None:
    if fields is None:
        return None
    return Scene(**{**fields, "positions": tuple(fields["positions"])})


def load_truth(folder: str | Path) -> Truth:
    folder = Path(folder)
    payload = json.loads((folder / TRUTH_FILE).read_text())
    memorized = []
    for entry in payload["memorized"]:
        paths = tuple(folder / name for name in entry["images"])
        layout_path = folder / entry["layout"] if entry.get("layout") else None
        memorized.append(
            MemorizedItem(
                id=entry["id"],
                kind=entry["kind"],
                captions=tuple(entry["captions"]),
                image_paths=paths,
                images=np.stack([_png(p) for p in paths]),
                layout_path=layout_path,
                layout=_png(layout_path) if layout_path else None,
                colour_variation=entry.get("colour_variation"),
                concept=entry.get("concept"),
                scene=_scene(entry.get("scene")),
            )
        )
    concepts = []
    for entry in payload["concepts"]:
        rgba = _png(folder / entry["reference"])
        concepts.append(
            Concept(
                name=entry["name"],
                kind=entry["kind"],
                aliases=tuple(entry["aliases"]),
                description=entry["description"],
                reference_path=folder / entry["reference"],
                reference=rgba[..., :3].copy(),
                mask=rgba[..., 3] > 127,
            )
        )
    prompts = payload["prompts"]
    return Truth(
        memorized=tuple(memorized),
        concepts=tuple(concepts),
        novel=tuple(prompts["novel"]),
        intended=tuple(IntendedPrompt(**p) for p in prompts["intended"]),
        memorized_prompts=dict(prompts["memorized"]),
        mixed_prompts=dict(prompts["mixed"]),
    )
