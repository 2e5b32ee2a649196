"""Acceptance benchmark of intent-aware re-sampling on the testbed (issue 4).

For every evaluation prompt of the testbed (intended-concept, unintended memorized, mixed, novel)
and seed, it generates the image unguarded and under the guard (the shipped calibration, the
testbed's registry, the default policy: intended -> allow, unintended and mixed -> re-sample), and
checks:
- intended prompts: share left untouched (the same pixels as unguarded);
- unintended memorized prompts: replication rate unguarded vs guarded; re-samples per image;
- mixed prompts: the photo no longer replicated, the intended concept still present;
- novel prompts: share unchanged.
Then each mitigation strategy alone (and with its main knob varied) on the memorized and mixed
prompts: replication, concept kept, re-samples, and seconds per image.

    python benchmarks/mitigation.py [--seeds 0 1 2 3] [--out benchmarks/results/mitigation.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from memguard import testbed
from memguard.mitigation import (
    DEFAULT_MITIGATION,
    AttentionRescale,
    GuidanceSchedule,
    InitialNoiseOptimization,
    PromptEmbeddingOptimization,
    RandomTokenAddition,
    ReSeed,
)
from memguard.testbed.data import evaluation_prompts
from memguard.testbed.similarity import CONCEPT_THRESHOLD, concept_match, replicates

STEPS, GUIDANCE = 50, 7.5
STRATEGIES = {
    "reseed": ReSeed(),
    "attention_rescale(triggers)": AttentionRescale(scope="triggers"),
    "attention_rescale(all, 1.1)": AttentionRescale(1.1, scope="all"),
    "attention_rescale(all, 1.25)": AttentionRescale(1.25, scope="all"),
    "attention_rescale(all, 1.5)": AttentionRescale(1.5, scope="all"),
    "prompt_embedding_opt(all)": PromptEmbeddingOptimization(scope="all"),
    "prompt_embedding_opt(all, target 0.5x)": PromptEmbeddingOptimization(scope="all", target=0.0275),
    "initial_noise_opt": InitialNoiseOptimization(),
    "guidance_schedule(off)": GuidanceSchedule(0.0),
    "guidance_schedule(opposite -2)": GuidanceSchedule(-2.0),
    "random_tokens(4)": RandomTokenAddition(4),
    "random_tokens(8)": RandomTokenAddition(8),
    "default: " + DEFAULT_MITIGATION.name: DEFAULT_MITIGATION,
}


def as_uint8(images) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def generate(pipe, prompts: list[str], seed: int):
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    out = pipe(prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generators, output_type="np")
    return as_uint8(out.images), getattr(out, "memorization", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--strategy-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mitigation.json"))
    args = parser.parse_args()
    started = time.perf_counter()

    guarded, truth = testbed.load()
    plain = guarded.guard_config.replace(enabled=False)
    ev = evaluation_prompts()
    intended = [p.prompt for p in ev.intended]
    memorized_ids, memorized = list(ev.memorized), list(ev.memorized.values())
    mixed_ids, mixed = list(ev.mixed), list(ev.mixed.values())
    sets = {"intended": intended, "memorized": memorized, "mixed": mixed, "novel": ev.novel}

    rows = {name: [] for name in sets}
    for seed in args.seeds:
        for name, prompts in sets.items():
            guarded.guard_config, config = plain, guarded.guard_config
            reference, _ = generate(guarded, prompts, seed)
            guarded.guard_config = config
            images, reports = generate(guarded, prompts, seed)
            for j, (ref, image, report) in enumerate(zip(reference, images, reports, strict=False)):
                row = dict(
                    seed=seed,
                    unchanged=bool(np.array_equal(ref, image)),
                    action=report.action,
                    intent=report.intent,
                    resamples=report.resamples,
                    score=report.score,
                )
                if name in ("memorized", "mixed"):
                    item = truth.item((memorized_ids if name == "memorized" else mixed_ids)[j])
                    row.update(
                        id=item.id, replicated_before=replicates(ref, item), replicated_after=replicates(image, item)
                    )
                    if item.concept:
                        row["concept_after"] = concept_match(image, truth.concept(item.concept))[0] >= CONCEPT_THRESHOLD
                if name == "intended":
                    row["concept_after"] = (
                        concept_match(image, truth.concept(ev.intended[j].concept))[0] >= CONCEPT_THRESHOLD
                    )
                rows[name].append(row)
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)

    def mean(values) -> float:
        values = list(values)
        return float(np.mean(values)) if values else float("nan")

    resampled = [r["resamples"] for r in rows["memorized"] if r["resamples"]]
    checks = {
        "intended_untouched": dict(value=mean(r["unchanged"] for r in rows["intended"]), target=">= 0.98"),
        "unintended_replication_unguarded": dict(value=mean(r["replicated_before"] for r in rows["memorized"])),
        "unintended_replication_guarded": dict(
            value=mean(r["replicated_after"] for r in rows["memorized"]), target="<= 0.05"
        ),
        "unintended_resamples_mean": dict(value=mean(resampled), target="<= 3"),
        "mixed_photo_not_replicated": dict(
            value=mean(not r["replicated_after"] for r in rows["mixed"]), target=">= 0.9"
        ),
        "mixed_concept_present": dict(value=mean(r["concept_after"] for r in rows["mixed"]), target=">= 0.9"),
        "novel_unchanged": dict(value=mean(r["unchanged"] for r in rows["novel"]), target=">= 0.99"),
        "memorized_detected": dict(value=mean(r["action"] != "none" for r in rows["memorized"])),
        "intended_verdicts": {
            k: sum(r["intent"] == k for r in rows["intended"]) for k in ("none", "intended", "mixed", "unintended")
        },
        "mixed_verdicts": {
            k: sum(r["intent"] == k for r in rows["mixed"]) for k in ("none", "intended", "mixed", "unintended")
        },
    }
    for check in checks.values():
        if "target" in check:
            op, bound = check["target"].split()
            check["passed"] = check["value"] >= float(bound) if op == ">=" else check["value"] <= float(bound)

    # Each strategy alone on the memorized and mixed prompts (default policy otherwise).
    strategies = {}
    for label, mitigation in STRATEGIES.items():
        guarded.guard_config = config.replace(mitigation=mitigation)
        t0, results = time.perf_counter(), []
        for seed in args.strategy_seeds:
            for ids, prompts in ((memorized_ids, memorized), (mixed_ids, mixed)):
                images, reports = generate(guarded, prompts, seed)
                for item_id, image, report in zip(ids, images, reports, strict=False):
                    item = truth.item(item_id)
                    results.append(
                        dict(
                            mixed=item.kind == "mixed",
                            replicated=replicates(image, item),
                            concept=(concept_match(image, truth.concept(item.concept))[0] >= CONCEPT_THRESHOLD)
                            if item.concept
                            else None,
                            resamples=report.resamples,
                        )
                    )
        seconds = time.perf_counter() - t0
        strategies[label] = dict(
            replication=mean(r["replicated"] for r in results if not r["mixed"]),
            mixed_replication=mean(r["replicated"] for r in results if r["mixed"]),
            mixed_concept_kept=mean(r["concept"] for r in results if r["mixed"]),
            resamples_mean=mean(r["resamples"] for r in results if r["resamples"]),
            seconds_per_image=seconds / len(results),
        )
        print(f"{label}: {strategies[label]}", flush=True)
    guarded.guard_config = config

    result = dict(
        settings=dict(
            seeds=args.seeds,
            strategy_seeds=args.strategy_seeds,
            steps=STEPS,
            guidance=GUIDANCE,
            default_mitigation=DEFAULT_MITIGATION.name,
            policy=str(config.policy),
        ),
        checks=checks,
        strategies=strategies,
        rows=rows,
        seconds=round(time.perf_counter() - started, 1),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'check':40s} {'value':>10s}  target")
    for name, check in checks.items():
        if "value" in check:
            flag = "" if "passed" not in check else ("PASS" if check["passed"] else "FAIL")
            print(f"{name:40s} {check['value']:10.3f}  {check.get('target', '')} {flag}")
        else:
            print(f"{name:40s} {check}")
    print(f"\n{'strategy':40s} {'replic.':>8s} {'mixed rep':>9s} {'concept':>8s} {'resamples':>9s} {'s/img':>7s}")
    for label, s in strategies.items():
        print(
            f"{label:40s} {s['replication']:8.3f} {s['mixed_replication']:9.3f} {s['mixed_concept_kept']:8.3f} "
            f"{s['resamples_mean']:9.2f} {s['seconds_per_image']:7.2f}"
        )
    print(f"\nwrote {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
