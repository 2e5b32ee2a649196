"""Does the calibration's guarantee hold on prompts it never saw, and does one calibration serve
float32 and bfloat16?

    python benchmarks/calibration.py [--model testbed|testbed-xl|DIR] [--fresh 1000] [--images 1]
                                     [--out benchmarks/results/calibration.json]

1. Calibrates the testbed for a 1% false-positive rate at 95% confidence on the shipped calibration's
   1,500 distinct prompts (`memguard.testbed.data.shipped_calibration_prompts`), one starting noise each,
   with `memguard.calibrate` (each distinct prompt is one sample of the guarantee: the images of one
   prompt are not independent).
2. Scores fresh benign prompts the calibration never saw: new scenes (another seed) captioned in
   wordings neither the training nor the calibration uses (`FRESH_WORDINGS`), `--images` starting
   noises each from seeds far from the calibration's, and reports the realized false-positive rate
   with its Wilson 95% interval (one image per prompt by default, so the interval's independence
   holds), overall and split by whether the calibration prompts' token range covers each prompt
   (`Calibration.coverage`).
3. Loads the same weights in bfloat16, scores the same fresh images, and reports how far the scores
   move, how many decisions flip at the float32 threshold, the realized rate in bfloat16, and the
   threshold a bfloat16 calibration picks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import provenance, testbed_folder, write_json  # noqa: E402

import memguard  # noqa: E402
from memguard import testbed  # noqa: E402
from memguard.detection import DETECTORS  # noqa: E402
from memguard.prompt_tokens import prompt_token_counts  # noqa: E402
from memguard.testbed.data import one_shape_prompts, shipped_calibration_prompts  # noqa: E402
from memguard.thresholds import wilson_interval  # noqa: E402

STEPS, GUIDANCE = 50, 7.5
TARGET_FPR, CONFIDENCE = 0.01, 0.95
CALIBRATION_IMAGES = 1
FRESH_SEED = 98_765  # scenes drawn apart from the calibration's (4321) and the evaluation sets' (1234)
FRESH_NOISE_SEED = 1_000_000  # starting noises far from the calibration's (0 ..)
# Wordings the testbed's captions never use (memguard/testbed/scenes.py has the ones it trains on).
FRESH_WORDINGS = (
    "there is {a} {size} {colour} {shape} {where}, and the background is {bg}",
    "{colour} {shape} ({size}) placed {where}",
    "{a} {size} {shape} coloured {colour}, {where}, over {bg}",
    "{bg} canvas, {a} {colour} {shape} {where}",
    "simple drawing of {a} {size} {colour} {shape} {where}",
    "{where}: one {size} {colour} {shape}",
    "flat {bg} backdrop and {a} {colour} {shape}, {size}, {where}",
    "minimal picture, {size} {shape} in {colour} {where}",
)


def fresh_prompts(n: int, seed: int = FRESH_SEED) -> list[str]:
    return one_shape_prompts(n, seed, FRESH_WORDINGS)


def calibrate(pipe, prompts: list[str] | None = None, detector: str | None = None) -> memguard.Calibration:
    """`prompts` (None: the shipped calibration's, `shipped_calibration_prompts`), CALIBRATION_IMAGES starting
    noises each, 1% at 95%; `detector` None: memguard's default."""
    return memguard.calibrate(
        pipe,
        shipped_calibration_prompts() if prompts is None else prompts,
        TARGET_FPR,
        detector=detector,
        confidence=CONFIDENCE,
        num_images_per_prompt=CALIBRATION_IMAGES,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        batch_size=25,
        progress=False,
    )


def scores(pipe, prompts: list[str], config, images: int, seed: int) -> np.ndarray:
    reports = pipe.score(
        prompts,
        config=config,
        num_images_per_prompt=images,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        batch_size=25,
        seed=seed,
        progress=False,
    )
    return np.array([r.score for r in reports], dtype=np.float64)


def realized(values: np.ndarray, threshold: float) -> dict:
    hits = int((values > threshold).sum())
    low, high = wilson_interval(hits, len(values))
    return {
        "images": len(values),
        "above": hits,
        "rate": round(hits / len(values), 4),
        "wilson95": [round(low, 4), round(high, 4)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=testbed_folder, default=testbed.MODEL_DIR, help="testbed, testbed-xl or a folder"
    )
    parser.add_argument("--fresh", type=int, default=1000, help="fresh benign prompts")
    parser.add_argument("--images", type=int, default=1, help="starting noises per fresh prompt")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=None, help="default: memguard's own")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "calibration.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()

    pipe, _ = testbed.load(model_dir=args.model)
    calibration = calibrate(pipe, detector=args.detector)
    config = memguard.GuardConfig(calibration=calibration)
    fresh = fresh_prompts(args.fresh)
    full = scores(pipe, fresh, config, args.images, FRESH_NOISE_SEED)
    # each fresh image's prompt against the calibration prompts' token range (reports are prompt-major)
    lengths = prompt_token_counts(pipe.tokenizer, fresh)
    coverage = np.repeat([calibration.coverage(n) or "unknown" for n in lengths], args.images)

    half, _ = testbed.load(model_dir=args.model, dtype=torch.bfloat16)
    reduced = scores(
        half, fresh, memguard.GuardConfig(calibration=calibration, threshold=None), args.images, FRESH_NOISE_SEED
    )
    half_calibration = calibrate(half, detector=args.detector)
    shift = np.abs(reduced - full)
    threshold = calibration.threshold
    result = {
        **provenance("benchmarks/calibration.py", args.model),
        "settings": {"steps": STEPS, "guidance_scale": GUIDANCE, "target_fpr": TARGET_FPR, "confidence": CONFIDENCE},
        "calibration": {
            "detector": calibration.detector,
            "num_scores": calibration.num_scores,
            "threshold": threshold,
            "threshold_rank": calibration.threshold_rank,
            "confidence": calibration.confidence,
            "expected_fpr": calibration.expected_fpr,
            "benign_max": max(calibration.benign_scores),
            "empirical_1pct_quantile": sorted(calibration.benign_scores, reverse=True)[
                int(TARGET_FPR * calibration.num_scores)
            ],
        },
        "fresh_float32": realized(full, threshold),
        "fresh_float32_by_coverage": {
            "calibration_prompt_tokens": calibration.prompt_tokens,
            "fresh_prompt_tokens": [min(lengths), max(lengths)],
            **{c: realized(full[coverage == c], threshold) for c in sorted(set(coverage))},
        },
        "fresh_wordings": len(FRESH_WORDINGS),
        "bfloat16": {
            "score_shift_mean": float(shift.mean()),
            "score_shift_p99": float(np.quantile(shift, 0.99)),
            "score_shift_max": float(shift.max()),
            "threshold_margin_of_fresh_images": float(statistics.median(np.abs(full - threshold))),
            "decisions_flipped_at_float32_threshold": int(((reduced > threshold) != (full > threshold)).sum()),
            "fresh_at_float32_threshold": realized(reduced, threshold),
            "threshold_of_a_bfloat16_calibration": half_calibration.threshold,
            "fingerprints_equal": half_calibration.model_fingerprint == calibration.model_fingerprint,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(result, args.out)


if __name__ == "__main__":
    main()
