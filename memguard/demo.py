"""`memguard demo`: guard a shipped testbed on one prompt of each kind; write a picture and a report.

The picture shows, per prompt, the training image the prompt could copy, what the model draws without
memguard, and what the guarded pipeline returns with its verdict in plain words.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import GuardConfig
from .grid import render_strips
from .pipelines import guard

DEMO_SEED = 0


@dataclass(frozen=True)
class DemoResult:
    grid_path: Path
    report_path: Path
    model: str
    seconds: float


def _testbed_prompts(truth) -> list[tuple[str, str, np.ndarray | None]]:
    """(kind, prompt, the training image it could reproduce): a memorized caption, an intended
    concept (its reference drawing), a mixed item and a novel scene (no training image)."""
    memorized = next(m for m in truth.memorized if m.kind == "matching")
    mixed_id, mixed_prompt = next(iter(truth.mixed_prompts.items()))
    intended = truth.intended[0]
    concept = truth.concept(intended.concept)
    return [
        ("memorized", truth.memorized_prompts[memorized.id], memorized.images[0]),
        ("intended", intended.prompt, _on_white(concept.reference, concept.mask)),
        ("mixed", mixed_prompt, truth.item(mixed_id).images[0]),
        ("novel", truth.novel[0], None),
    ]


def _on_white(reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A concept's reference drawing (its shape only) on a white square."""
    size = max(reference.shape[:2]) + 4
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    h, w = reference.shape[:2]
    region = canvas[2 : 2 + h, 2 : 2 + w]
    region[mask] = reference[mask]
    return canvas


def run_demo(
    out_dir: Path,
    *,
    steps: int = 50,
    guidance_scale: float = 7.5,
    config: GuardConfig | None = None,
    model: str = "testbed",
    device: str = "cpu",
) -> DemoResult:
    """`model`: "testbed" (Stable Diffusion architecture) or "testbed-xl" (SDXL architecture)."""
    start = time.perf_counter()
    from . import testbed

    if model not in ("testbed", "testbed-xl"):
        raise ValueError(f"the demo runs 'testbed' or 'testbed-xl', got {model!r}")
    model_dir = testbed.MODEL_DIR if model == "testbed" else testbed.XL_MODEL_DIR
    pipe, truth = testbed.load(device=device, guard=config, model_dir=model_dir)
    prompts = _testbed_prompts(truth)
    model = "memguard testbed" if model == "testbed" else "memguard testbed (SDXL architecture)"

    def run(guarded):
        generators = [torch.Generator("cpu").manual_seed(DEMO_SEED + i) for i in range(len(prompts))]
        texts = [prompt for _, prompt, _ in prompts]
        return guarded(texts, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generators)

    unguarded = run(guard(pipe, GuardConfig(enabled=False)))  # the parent pipeline's own images
    output = run(pipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_path = out_dir / "demo_grid.png"
    rows = [
        (prompt, training, plain, guarded, report)
        for (_, prompt, training), plain, guarded, report in zip(
            prompts, unguarded.images, output.images, output.memorization, strict=True
        )
    ]
    render_strips(rows).save(grid_path)
    report_path = out_dir / "demo_report.json"
    # The demo's prompts are the project's own test prompts, so the report may show them.
    payload = {
        "model": model,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "images": [
            {"kind": kind, "prompt": prompt, "report": report.to_dict(include_text=True)}
            for (kind, prompt, _), report in zip(prompts, output.memorization, strict=True)
        ],
    }
    report_path.write_text(json.dumps(payload, indent=2) + "\n")
    return DemoResult(grid_path, report_path, model, time.perf_counter() - start)
