"""How often does the shipped calibration flag benign prompts of a few words, inside and outside its
prompts' length range?

    python benchmarks/short_prompts.py [--model testbed|testbed-xl|DIR] [--images 2]
                                       [--out benchmarks/results/short_prompts.json]

A prompt of one word or none spreads its attention over the padding, as a memorized caption does, so
the default attention score runs high on it; the calibration's guarantee says nothing about prompts
shorter than any it was measured on (`Calibration.prompt_tokens`). Three benign sets in the testbed's
own vocabulary, none of them a memorized caption:

- terse: the empty prompt, single words (colours, shapes, sizes, positions), "a circle", "red
  square", "top left", ... : every such prompt of the vocabulary;
- terse but in range: "red circle, top left", "small blue cross, bottom": 120 drawn with a fixed seed;
- probes: "", "!!!", ".", "red", "a photo" on 8 noises each.

Each image is scored at the detector's decision step with the shipped calibration (`--images` noises
per prompt, seeds apart from the benchmarks'), and reported by the prompt's coverage
(`Calibration.coverage`) with the Wilson 95% interval of the flagged share.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import provenance, testbed_folder, write_json  # noqa: E402
from calibration import GUIDANCE, STEPS, realized, scores  # noqa: E402

from memguard import testbed  # noqa: E402
from memguard.prompt_tokens import prompt_token_counts  # noqa: E402
from memguard.testbed.scenes import PALETTE, POSITIONS, SHAPES, SIZES  # noqa: E402

NOISE_SEED = 3_000_000  # apart from the calibration's (0 ..) and the fresh prompts' (1,000,000 ..)
IN_RANGE_SEED, IN_RANGE_PROMPTS = 777, 120
PROBES, PROBE_NOISES = ("", "!!!", ".", "red", "a photo"), 8


def terse_prompts() -> list[str]:
    """The empty prompt, every single word and every two-word phrase of the vocabulary below."""
    colours, positions = list(PALETTE), list(POSITIONS)
    words = [*colours, *SHAPES, *SIZES, *(p for p in positions if " " not in p)]
    pairs = [f"a {s}" for s in SHAPES] + [f"{c} {s}" for c in colours for s in SHAPES]
    pairs += [p for p in positions if " " in p]
    return list(dict.fromkeys(["", *words, *pairs]))


def in_range_prompts(n: int = IN_RANGE_PROMPTS, seed: int = IN_RANGE_SEED) -> list[str]:
    """Terse scenes with a position: "red circle, top left", "small blue cross, bottom"."""
    rng = np.random.default_rng(seed)
    prompts: dict[str, None] = {}
    while len(prompts) < n:
        colour = list(PALETTE)[rng.integers(len(PALETTE))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        position = list(POSITIONS)[rng.integers(len(POSITIONS))]
        size = f"{list(SIZES)[rng.integers(len(SIZES))]} " if rng.random() < 0.5 else ""
        prompts.setdefault(f"{size}{colour} {shape}, {position}")
    return list(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=testbed_folder, default=testbed.MODEL_DIR, help="testbed, testbed-xl or a folder"
    )
    parser.add_argument("--images", type=int, default=2, help="starting noises per prompt")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "short_prompts.json")
    args = parser.parse_args()
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")
    torch.set_num_threads(2)
    started = time.perf_counter()

    pipe, _ = testbed.load(model_dir=args.model)
    config = pipe.guard_config
    calibration, threshold = config.calibration, config.calibration.threshold
    terse, in_range = terse_prompts(), in_range_prompts()
    terse_scores = scores(pipe, terse, config, args.images, NOISE_SEED)
    range_scores = scores(pipe, in_range, config, args.images, NOISE_SEED)
    lengths = prompt_token_counts(pipe.tokenizer, terse + in_range)
    # each image's prompt against the calibration prompts' token range (scores are prompt-major)
    coverage = np.repeat([calibration.coverage(n) or "unknown" for n in lengths], args.images)
    every = np.concatenate([terse_scores, range_scores])
    probes = {}
    for probe in PROBES:
        above = realized(scores(pipe, [probe], config, PROBE_NOISES, 0), threshold)["above"]
        probes[repr(probe)] = f"{above} of {PROBE_NOISES}"
    result = {
        **provenance("benchmarks/short_prompts.py", args.model),
        "settings": {
            "steps": STEPS,
            "guidance_scale": GUIDANCE,
            "images_per_prompt": args.images,
            "noise_seed": NOISE_SEED,
            "threshold": threshold,
            "calibration_prompt_tokens": calibration.prompt_tokens,
        },
        "terse": {"prompts": len(terse), **realized(terse_scores, threshold)},
        "terse_in_range": {"prompts": len(in_range), **realized(range_scores, threshold)},
        "by_coverage": {str(c): realized(every[coverage == c], threshold) for c in sorted(set(coverage))},
        "prompt_tokens": {
            "terse": [min(lengths[: len(terse)]), max(lengths[: len(terse)])],
            "terse_in_range": [min(lengths[len(terse) :]), max(lengths[len(terse) :])],
        },
        "probes_over_threshold": probes,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(result, args.out)
    print(result["terse"], result["terse_in_range"], result["by_coverage"], probes)


if __name__ == "__main__":
    main()
