"""`memguard demo`: guard the shipped testbed on one prompt of each kind; write a grid and a report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import GuardConfig
from .grid import render_grid

DEMO_SEED = 0


@dataclass(frozen=True)
class DemoResult:
    grid_path: Path
    report_path: Path
    model: str
    seconds: float


def _testbed_prompts(truth) -> list[tuple[str, str]]:
    """(kind, prompt): a memorized caption, an intended concept, a mixed item and a novel scene."""
    memorized = next(m for m in truth.memorized if m.kind == "matching")
    return [
        ("memorized", truth.memorized_prompts[memorized.id]),
        ("intended", truth.intended[0].prompt),
        ("mixed", next(iter(truth.mixed_prompts.values()))),
        ("novel", truth.novel[0]),
    ]


def run_demo(
    out_dir: Path,
    *,
    steps: int = 50,
    guidance_scale: float = 7.5,
    config: GuardConfig | None = None,
    model: str = "testbed",
) -> DemoResult:
    """`model`: "testbed" (Stable Diffusion architecture) or "testbed-xl" (SDXL architecture)."""
    start = time.perf_counter()
    from . import testbed

    if model not in ("testbed", "testbed-xl"):
        raise ValueError(f"the demo runs 'testbed' or 'testbed-xl', got {model!r}")
    model_dir = testbed.MODEL_DIR if model == "testbed" else testbed.XL_MODEL_DIR
    pipe, truth = testbed.load(guard=config, model_dir=model_dir)
    prompts = _testbed_prompts(truth)
    model = "memguard testbed" if model == "testbed" else "memguard testbed (SDXL architecture)"
    generators = [torch.Generator("cpu").manual_seed(DEMO_SEED + i) for i in range(len(prompts))]
    output = pipe(
        [prompt for _, prompt in prompts],
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generators,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_path = out_dir / "demo_grid.png"
    render_grid(output.images, [kind for kind, _ in prompts], output.memorization).save(grid_path)
    report_path = out_dir / "demo_report.json"
    # The demo's prompts are the project's own test prompts, so the report may show them.
    payload = {
        "model": model,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "images": [
            {"kind": kind, "prompt": prompt, "report": report.to_dict(include_text=True)}
            for (kind, prompt), report in zip(prompts, output.memorization, strict=True)
        ],
    }
    report_path.write_text(json.dumps(payload, indent=2) + "\n")
    return DemoResult(grid_path, report_path, model, time.perf_counter() - start)
