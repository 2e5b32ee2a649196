"""Acceptance benchmark of the shipped testbed model: does it really memorize, and only that?

Generates every evaluation prompt of the testbed's ground truth over 4 seeds (DDIM, 50 steps,
guidance 7.5) with the plain diffusers pipeline, then checks:
- replication: each memorized/mixed item is replicated in >= 3 of 4 seeds for >= 90% of items;
  at most 2% of novel-prompt generations replicate any duplicated training image;
- intended: concept prompts show the concept on the requested background, and at the requested
  position, >= 90% of the time each;
- sanity: Wen et al.'s step-1 noise magnitude separates memorized from novel prompts, AUC >= 0.9 (over
  every kind but the compositions, whose ordinary captions pin a scene as benign ones do; the AUC over
  every item is printed beside it).
It also prints the null distributions behind the similarity thresholds.

    python benchmarks/testbed.py [--model testbed|testbed-xl|DIR] [--out benchmarks/results/testbed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _results import testbed_folder  # noqa: E402

from memguard.detection import record_trace  # noqa: E402
from memguard.signals import SignalNeeds  # noqa: E402
from memguard.testbed import load_truth  # noqa: E402
from memguard.testbed.roc import auc  # noqa: E402
from memguard.testbed.similarity import (  # noqa: E402
    CONCEPT_THRESHOLD,
    LAYOUT_THRESHOLD,
    REPLICATION_THRESHOLD,
    background_colour,
    concept_match,
    item_similarity,
    nearest_position,
    replicates,
    ssim,
)

SEEDS = (0, 1, 2, 3)
STEPS, GUIDANCE = 50, 7.5


def generate(pipe, prompts: list[str], seed: int) -> np.ndarray:
    """(P, 32, 32, 3) uint8 images, every prompt's starting noise drawn from `seed`."""
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    images = pipe(
        prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generators, output_type="np"
    ).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def noise_norms(pipe, prompts: list[str], seed: int) -> np.ndarray:
    """Wen et al.'s step-1 magnitude ||out(x_T, prompt) - out(x_T, '')||_2 per prompt, where `out` is what
    the UNet predicts (epsilon on SD 1.x, v on a v-prediction model), read as the guard reads it: from
    the pipeline's own first step (the same starting noise as `generate`), whatever the family."""
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    trace = record_trace(
        pipe,
        prompts,
        SignalNeeds(),
        upto_step=1,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=generators,
    )
    return trace.steps[0].noise_norm.cpu().numpy()


def save_grid(rows: list[np.ndarray], path: Path) -> None:
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="testbed", help="testbed, testbed-xl or a testbed folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "testbed.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    started = time.perf_counter()

    args.model = testbed_folder(args.model)
    truth = load_truth(args.model / "truth")
    pipe = DiffusionPipeline.from_pretrained(args.model)  # the class its model_index.json names
    pipe.set_progress_bar_config(disable=True)
    items = list(truth.memorized)
    item_prompts = [item.captions[0] for item in items]
    novel = list(truth.novel)
    intended = list(truth.intended)
    prompts = item_prompts + novel + [p.prompt for p in intended]
    images = np.stack([generate(pipe, prompts, seed) for seed in SEEDS])  # (S, P, 32, 32, 3)
    norms = np.stack([noise_norms(pipe, prompts, seed) for seed in SEEDS])
    n_items, n_novel = len(items), len(novel)
    item_images, novel_images, intended_images = np.split(images, [n_items, n_items + n_novel], axis=1)
    item_norms, novel_norms = norms[:, :n_items], norms[:, n_items : n_items + n_novel]

    # Replication of each memorized / mixed item.
    per_item = []
    for i, item in enumerate(items):
        scores = [item_similarity(item_images[s, i], item) for s in range(len(SEEDS))]
        hits = sum(replicates(item_images[s, i], item) for s in range(len(SEEDS)))
        per_item.append(dict(id=item.id, kind=item.kind, similarity=[round(x, 3) for x in scores], replicated=hits))
    items_ok = sum(entry["replicated"] >= 3 for entry in per_item) / len(items)

    # Novel prompts: does any generation replicate any duplicated training image?
    novel_best = np.array(
        [
            [max(item_similarity(novel_images[s, j], item) for item in items) for j in range(n_novel)]
            for s in range(len(SEEDS))
        ]
    )
    novel_hits = np.array(
        [
            [any(replicates(novel_images[s, j], item) for item in items) for j in range(n_novel)]
            for s in range(len(SEEDS))
        ]
    )

    # Intended concepts: present, and following the rest of the prompt (background, position).
    intended_rows = []
    for s in range(len(SEEDS)):
        for j, p in enumerate(intended):
            score, centre = concept_match(intended_images[s, j], truth.concept(p.concept))
            background = background_colour(intended_images[s, j])
            intended_rows.append(
                dict(
                    concept=score >= CONCEPT_THRESHOLD,
                    background=background == p.background,
                    position=score >= CONCEPT_THRESHOLD and nearest_position(centre) == p.position,
                )
            )
    intended_ok = np.mean([r["concept"] and r["background"] for r in intended_rows])
    position_ok = np.mean([r["position"] for r in intended_rows])

    # Null distributions behind the thresholds.
    photos = [item for item in items if item.kind != "template"]
    distinct_ssim = max(ssim(a.images[0], b.images[0]) for a in photos for b in photos if a.id != b.id)
    distinct_layout = max(
        item_similarity(other.images[0], item)
        for item in items
        if item.kind == "template"
        for other in items
        if other.id != item.id
    )

    # Wen's AUC over the items the check was set on (every kind but the ordinary-caption compositions,
    # whose captions pin a scene as many benign captions do), and over every item as information
    earlier = [i for i, item in enumerate(items) if item.kind != "composition"]
    auc_value = auc(item_norms[:, earlier].ravel(), novel_norms.ravel())
    auc_all = auc(item_norms.ravel(), novel_norms.ravel())
    results = dict(
        settings=dict(seeds=list(SEEDS), steps=STEPS, guidance=GUIDANCE, scheduler="DDIM"),
        thresholds=dict(ssim=REPLICATION_THRESHOLD, layout_r2=LAYOUT_THRESHOLD, concept_ncc=CONCEPT_THRESHOLD),
        null=dict(
            max_ssim_between_distinct_training_photos=round(distinct_ssim, 3),
            max_layout_r2_of_other_training_images=round(distinct_layout, 3),
            novel_best_similarity_max=round(float(novel_best.max()), 3),
            novel_best_similarity_mean=round(float(novel_best.mean()), 3),
        ),
        items=per_item,
        checks=dict(
            items_replicated_3_of_4=dict(value=items_ok, target=">= 0.9", passed=bool(items_ok >= 0.9)),
            novel_replication_rate=dict(
                value=float(novel_hits.mean()), target="<= 0.02", passed=bool(novel_hits.mean() <= 0.02)
            ),
            intended_concept_and_background=dict(
                value=float(intended_ok), target=">= 0.9", passed=bool(intended_ok >= 0.9)
            ),
            intended_concept_at_requested_position=dict(
                value=float(position_ok), target=">= 0.9", passed=bool(position_ok >= 0.9)
            ),
            noise_norm_auc_memorized_vs_novel=dict(value=auc_value, target=">= 0.9", passed=bool(auc_value >= 0.9)),
            noise_norm_auc_every_item_vs_novel=dict(value=auc_all),
        ),
        seconds=round(time.perf_counter() - started, 1),
    )

    print(f"{'item':6} {'kind':10} {'similarity per seed':32} replicated")
    for entry in per_item:
        print(f"{entry['id']:6} {entry['kind']:10} {str(entry['similarity']):32} {entry['replicated']}/{len(SEEDS)}")
    print(f"\nthresholds: SSIM {REPLICATION_THRESHOLD}, layout R^2 {LAYOUT_THRESHOLD}, concept NCC {CONCEPT_THRESHOLD}")
    print("null distributions:", json.dumps(results["null"]))
    print(f"\n{'check':38} {'value':>8} {'target':>8}  result")
    for name, check in results["checks"].items():
        verdict = ("PASS" if check["passed"] else "FAIL") if "passed" in check else "info"
        print(f"{name:38} {check['value']:8.3f} {check.get('target', ''):>8}  {verdict}")
    print(f"\n{results['seconds']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    save_grid([images[s] for s in SEEDS], args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
