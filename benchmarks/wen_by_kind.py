"""Wen et al.'s noise magnitude on the testbed, per memorized kind and over the first steps.

Same prompts, seeds and settings as `benchmarks/detection.py` (the 18 memorized and mixed captions vs.
200 novel compositions, 4 seeds, DDIM 50, guidance 7.5). Prints the AUC of the magnitude averaged over
the first k steps (k = 1..6) and, at step 1, each kind's mean score against the novel prompts' median
and maximum: which memorized items the magnitude misses.

    python benchmarks/wen_by_kind.py [--model DIR] [--out benchmarks/results/wen_by_kind.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _results import model_label, write_json
from detection import _record, testbed_prompts
from diffusers import StableDiffusionPipeline

from memguard.detection import NoiseMagnitudeDetector
from memguard.testbed import MODEL_DIR, load_truth
from memguard.testbed.roc import auc

FIRST_STEPS, SEEDS = 6, [0, 1, 2, 3]  # detection.py's default: seeds 0..3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "wen_by_kind.json")
    args = parser.parse_args()
    pipe = StableDiffusionPipeline.from_pretrained(str(args.model))
    pipe.set_progress_bar_config(disable=True)
    truth = load_truth(args.model / "truth")
    memorized, benign = testbed_prompts(200, args.model)
    kinds = [truth.item(i).kind for i in [*truth.memorized_prompts, *truth.mixed_prompts]]
    detector = NoiseMagnitudeDetector()

    def scores(trace):
        return {k: detector.score(trace, k) for k in range(1, FIRST_STEPS + 1)}

    # {k: (seeds, prompts)} magnitudes averaged over the first k steps
    positive = _record(pipe, memorized, SEEDS, detector.needs, FIRST_STEPS, 50, 7.5, 25, scores)
    negative = _record(pipe, benign, SEEDS, detector.needs, FIRST_STEPS, 50, 7.5, 25, scores)
    step1_memorized, step1_benign = positive[1].mean(0), negative[1].mean(0)
    result = dict(
        model=model_label(args.model),
        auc_mean_of_first_k_steps={
            k: round(auc(positive[k].flatten().tolist(), negative[k].flatten().tolist()), 3) for k in positive
        },
        step1_mean_score_by_kind={
            kind: sorted(round(float(s), 3) for s, kd in zip(step1_memorized, kinds, strict=True) if kd == kind)
            for kind in dict.fromkeys(kinds)
        },
        step1_novel_median=round(float(step1_benign.median()), 3),
        step1_novel_max=round(float(step1_benign.max()), 3),
    )
    write_json(result, args.out)


if __name__ == "__main__":
    main()
