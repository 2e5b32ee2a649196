"""Does a calibration set worded more widely carry its guarantee to prompts worded otherwise?

    python benchmarks/calibration_wordings.py [--model testbed|testbed-xl|DIR] [--wider 500] [--fresh 1000]
                                              [--out benchmarks/results/calibration_wordings.json]

The fresh benign prompts of `benchmarks/calibration.py` use eight wordings (`FRESH_WORDINGS`) that
neither the testbed's training captions nor its calibration use. This calibrates memguard's default
score twice with `memguard.calibrate` (1% at 95%, step 1): on the testbed's 1,000 distinct calibration
prompts in its training captions' wordings only, and on those plus `--wider` prompts in six other
wordings (`memguard.testbed.data.OTHER_WORDINGS`: scenes from another seed), one noise each; at the
default 500 the second is the shipped calibration. For each it reports the threshold, the fresh benign
images over it (`--fresh` prompts x `--images` noises, the same as `calibration.py`'s) and the memorized
and mixed captions' images over it (4 seeds), so the cost of a wider calibration set in missed copies is
measured beside its gain in false positives. Scores only: about a minute on the testbeds on a 2-core
CPU. `--save-wider FILE` also writes the wider calibration, for `benchmarks/perturbations.py
--calibration FILE`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import provenance, testbed_folder, write_json  # noqa: E402
from calibration import (  # noqa: E402
    CONFIDENCE,
    FRESH_NOISE_SEED,
    FRESH_WORDINGS,
    GUIDANCE,
    STEPS,
    TARGET_FPR,
    calibrate,
    fresh_prompts,
    realized,
    scores,
)

import memguard  # noqa: E402
from memguard import testbed  # noqa: E402
from memguard.detection import CALIBRATED_DEFAULT, DETECTORS  # noqa: E402
from memguard.testbed.data import CALIBRATION_PROMPTS, OTHER_WORDINGS, calibration_prompts, other_wording_prompts  # noqa: E402

MEMORIZED_SEEDS = 4


def measured(
    pipe,
    prompts: list[str],
    fresh: list[str],
    memorized: list[str],
    images: int,
    detector: str | None = None,
    save: Path | None = None,
) -> dict:
    """Calibrate `detector` (None: memguard's default) on `prompts` (CALIBRATION_IMAGES noises each), then
    count what passes its threshold; `save`: write that calibration there too."""
    calibration = calibrate(pipe, prompts, detector)
    if save is not None:  # named as the shipped ones are: the folder's path would name this machine
        replace(calibration, model_name=f"memguard testbed ({Path(pipe.name_or_path).name})").save(save)
    config = memguard.GuardConfig(calibration=calibration)
    fresh_scores = scores(pipe, fresh, config, images, FRESH_NOISE_SEED)
    memorized_scores = scores(pipe, memorized, config, MEMORIZED_SEEDS, 0)
    threshold = calibration.threshold
    return {
        "calibration_prompts": len(prompts),
        "num_scores": calibration.num_scores,
        "threshold": threshold,
        "fresh": realized(fresh_scores, threshold),
        "memorized_images": len(memorized_scores),
        "memorized_over_threshold": int((memorized_scores > threshold).sum()),
        "memorized_lowest_score": float(memorized_scores.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=testbed_folder, default=testbed.MODEL_DIR, help="testbed, testbed-xl or a folder"
    )
    parser.add_argument("--wider", type=int, default=500, help="calibration prompts in the wider wordings")
    parser.add_argument("--fresh", type=int, default=1000, help="fresh benign prompts (calibration.py's)")
    parser.add_argument("--images", type=int, default=1, help="starting noises per fresh prompt")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=None, help="default: memguard's own")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "calibration_wordings.json")
    parser.add_argument(
        "--save-wider", type=Path, default=None, help="also write the wider calibration (for other benchmarks)"
    )
    args = parser.parse_args()
    if args.wider < 1:
        parser.error(f"--wider must be at least 1, got {args.wider}")
    torch.set_num_threads(2)
    started = time.perf_counter()

    pipe, truth = testbed.load(model_dir=args.model)
    own = calibration_prompts(n=CALIBRATION_PROMPTS)
    fresh = fresh_prompts(args.fresh)
    memorized = [*truth.memorized_prompts.values(), *truth.mixed_prompts.values()]
    result = {
        **provenance("benchmarks/calibration_wordings.py", args.model),
        "settings": {
            "steps": STEPS,
            "guidance_scale": GUIDANCE,
            "target_fpr": TARGET_FPR,
            "confidence": CONFIDENCE,
            "fresh_wordings": len(FRESH_WORDINGS),
            "wider_wordings": len(OTHER_WORDINGS),
            "detector": args.detector or CALIBRATED_DEFAULT,
        },
        "own_wordings": measured(pipe, own, fresh, memorized, args.images, args.detector),
        "wider_wordings": measured(
            pipe, own + other_wording_prompts(args.wider), fresh, memorized, args.images, args.detector, args.save_wider
        ),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(result, args.out)


if __name__ == "__main__":
    main()
