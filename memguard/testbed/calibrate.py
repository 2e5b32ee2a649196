"""Calibrate the guard on the testbed's benign prompts: ``python -m memguard.testbed.calibrate [--model DIR]``.

Writes ``calibration.json`` into the model folder; `memguard.testbed.load()` applies it by default.
Settings are the benchmarks': DDIM 50 steps, guidance 7.5, the detector's own decision step (1 for
memguard's default, 8 for "attention_or_updates"), 1% target FPR at 95% confidence, on 1,500 distinct
calibration prompts (1,000 in the training captions' wordings, 500 in six others:
`data.shipped_calibration_prompts`), one starting noise each (the guarantee needs at least 299 distinct
prompts: the images of one prompt are not independent samples).
``--detector NAME`` calibrates another registered detector (`memguard.detection.DETECTORS`).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from diffusers import DiffusionPipeline

from ..calibrating import calibrate
from ..calibration import Calibration
from ..detection import DETECTORS
from .data import shipped_calibration_prompts
from .paths import MODEL_DIR

CALIBRATION_FILE = "calibration.json"


def calibrate_testbed(model_dir: Path, target_fpr: float = 0.01, detector: str | None = None) -> Calibration:
    """`detector`: a registered detector's name; None: memguard's default."""
    pipe = DiffusionPipeline.from_pretrained(model_dir)  # the class its model_index.json names (SD or SDXL)
    pipe.set_progress_bar_config(disable=True)
    calibration = calibrate(
        pipe, shipped_calibration_prompts(), target_fpr=target_fpr, detector=detector, batch_size=25
    )
    # The folder's absolute path would name this machine in a file that ships; the fingerprint identifies it.
    calibration = replace(calibration, model_name=f"memguard testbed ({model_dir.name})")
    calibration.save(model_dir / CALIBRATION_FILE)
    return calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="testbed pipeline folder")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=None, help="default: memguard's own")
    args = parser.parse_args()
    calibration = calibrate_testbed(args.model, detector=args.detector)
    print(
        f"threshold {calibration.threshold:.4f} at achieved FPR {calibration.achieved_fpr:.3f} "
        f"on {calibration.num_scores} benign scores -> {args.model / CALIBRATION_FILE}"
    )


if __name__ == "__main__":
    main()
