"""How often does a re-sample copy *some* training image, over many starting noises? The residual risk of re-sampling.

`mitigation.py` measures replication after the guard on 4 (or 8) seeds, and with all the unintended
prompts sharing a seed's starting noise. A re-sample that leaves little of the prompt (the default
until 2026-12-02 masked every token but the begin token) depends almost only on that noise: one
unlucky seed can send every re-sample onto one memorized image, and a few seeds cannot tell the
rate. This script:

- re-samples every image (threshold -inf; the testbed's registry, the default mitigation, one attempt)
  for a few unintended prompts over many seeds, and counts finished images that replicate any
  duplicated training image (`memguard.testbed.similarity.replicated_items`);
- generates the same seeds with no prompt at all (the empty prompt): the share of the model's own
  prompt-free samples that are copies, which a prompt-masking re-sample inherits.

    python benchmarks/resample_copies.py [--model DIR] [--seeds 64] [--prompts m01 r01 t01] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from _results import model_label, testbed_folder, write_json

from memguard import Policy, testbed
from memguard.mitigation import DEFAULT_MITIGATION
from memguard.testbed.similarity import replicated_items

STEPS, GUIDANCE, BATCH = 50, 7.5, 16


def copies(pipe, truth, prompt: str, seeds: list[int]) -> list[list[str]]:
    """For each seed, the ids of the training items the finished image replicates."""
    found = []
    for start in range(0, len(seeds), BATCH):
        batch = seeds[start : start + BATCH]
        out = pipe(
            [prompt] * len(batch),
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=[torch.Generator().manual_seed(s) for s in batch],
            output_type="np",
        )
        images = (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)
        found += [replicated_items(image, truth.memorized) for image in images]
    return found


def summary(found: list[list[str]], seeds: list[int]) -> dict:
    return dict(
        copy_rate=round(sum(bool(f) for f in found) / len(found), 4),
        copies=len([f for f in found if f]),
        images=len(found),
        copied_items=dict(Counter(item for f in found for item in f).most_common()),
        seeds_with_a_copy=[s for s, f in zip(seeds, found, strict=True) if f],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=testbed_folder, default=testbed.MODEL_DIR, help="testbed, testbed-xl or a testbed folder"
    )
    parser.add_argument("--seeds", type=int, default=64, help="seeds 0..N-1")
    parser.add_argument("--prompts", nargs="+", default=["m01", "r01", "t01"], help="unintended item ids")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "resample_copies.json")
    args = parser.parse_args()
    started = time.perf_counter()
    pipe, truth = testbed.load(model_dir=args.model)
    unknown = sorted(set(args.prompts) - set(truth.memorized_prompts))
    if unknown:
        sys.exit(f"unknown unintended item id(s) {unknown}; known: {sorted(truth.memorized_prompts)}")
    seeds = list(range(args.seeds))
    resample_all = pipe.guard_config.replace(
        threshold=-1e9,  # every image is judged memorized, so every image is re-sampled once
        policy=Policy(unintended="resample", mixed="resample", max_attempts=1, fallback="flag"),
    )
    pipe.guard_config = resample_all
    resampled = {
        item: summary(copies(pipe, truth, truth.memorized_prompts[item], seeds), seeds) for item in args.prompts
    }
    pipe.guard_config = resample_all.replace(enabled=False)
    prompt_free = summary(copies(pipe, truth, "", seeds), seeds)
    result = dict(
        model=model_label(args.model),
        seeds=args.seeds,
        mitigation=DEFAULT_MITIGATION.name,
        steps=STEPS,
        guidance=GUIDANCE,
        resampled=resampled,
        resampled_copy_rate=round(
            sum(r["copies"] for r in resampled.values()) / sum(r["images"] for r in resampled.values()), 4
        ),
        prompt_free=prompt_free,
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json(result, args.out)


if __name__ == "__main__":
    main()
