"""Acceptance benchmark of intent-aware re-sampling on the testbed, and the per-strategy
trade-off sweep.

Replication counts a copy of *any* duplicated training image, not only the prompt's own: a
mitigation that sends every prompt to one memorized image has not removed memorization.

1. Acceptance: every evaluation prompt of the testbed (intended, unintended memorized, mixed,
   novel) and seed, generated unguarded and under the guard (shipped calibration, the testbed's
   registry, the default policy and mitigation):
   - intended prompts: share left untouched (the same pixels as unguarded);
   - unintended memorized prompts: replication unguarded vs guarded; re-samples per image;
   - composition items (memorized captions in the broad scenes' own words): replication unguarded vs
     guarded, and whether the returned image still draws what the caption says (background, shape,
     colour, position: `memguard.testbed.similarity.follows_scene`);
   - distinct re-samples: re-samples of two different memorized prompts at one seed must differ;
   - mixed prompts: no training image replicated, the intended concept still present;
   - novel prompts: share unchanged.
   Then the memorized and mixed prompts again with copy verification (an index of the testbed's
   training images, `memguard.testbed.verification_index`) as the guarded call's last step.
2. Trade-off: each strategy alone with its main knob swept, on the memorized and mixed prompts and
   on intended prompts forced through re-sampling (Policy(intended="resample")): replication vs
   concept kept (the testbed's prompt-alignment measure: the named concept is in the image) vs
   seconds per image. One panel per strategy in the plot. Strategies meant to run with copy
   verification (a retry follows a copy) run with it: the `verified:` ones.

    python benchmarks/mitigation.py [--seeds 0 1 2 3] [--model DIR] [--out benchmarks/results/mitigation.json]
    python benchmarks/mitigation.py --skip-acceptance --only dissimilarity verified [--strategy-seeds 0 1]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from memguard import Policy, testbed
from memguard.mitigation import (
    DEFAULT_MITIGATION,
    NUDGED_PROMPT,
    PROMPT_MASKING,
    AttentionRescale,
    ByIntent,
    Compose,
    Dissimilarity,
    Escalate,
    GuidanceSchedule,
    InitialNoiseOptimization,
    KeepIntendedPrefix,
    PromptEmbeddingOptimization,
    RandomTokenAddition,
    ReSeed,
)
from memguard.testbed.data import evaluation_prompts
from memguard.testbed.similarity import CONCEPT_THRESHOLD, concept_match, follows_scene, replicated_items
from memguard.verify import CopyVerification, calibrate_copy_threshold

sys.path.insert(0, str(Path(__file__).parent))  # the shared _results module beside this script
ASSETS = Path(__file__).resolve().parent.parent / "docs" / "assets"  # the plot the docs show
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mitigation.json"
from _results import model_label, plot_beside, testbed_folder, write_json  # noqa: E402

STEPS, GUIDANCE = 50, 7.5
# The copy threshold is calibrated, not guessed: 1% of benign generations may reach it. They are
# novel and intended prompts drawn like the evaluation sets but from another prompt seed, generated at a
# seed no evaluation uses. (The detector's calibration prompts name the background half the time; their
# images sit further from the training photos, and calibrating on them let 3% of benign evaluation
# images through.) A fixed 0.8, picked on seeds 0-3, sat inside the benign range on seeds 4-7.
VERIFY_TARGET_FPR, VERIFY_CALIBRATION_SEED, VERIFY_PROMPT_SEED = 0.01, 1000, 999

# strategy -> [(knob value, mitigation)]; the knob is what the panel's points are labelled with.
SWEEPS = {
    "reseed": [("-", ReSeed())],
    "attention_rescale(triggers), begin scale": [(s, AttentionRescale(s, scope="triggers")) for s in (1.1, 1.5)],
    "attention_rescale(all), begin scale": [(s, AttentionRescale(s, scope="all")) for s in (1.0, 1.25, 1.5)],
    "prompt_embedding_opt(all), iterations": [
        (n, PromptEmbeddingOptimization(scope="all", max_iterations=n)) for n in (5, 10, 20)
    ],
    "initial_noise_opt, iterations": [(n, InitialNoiseOptimization(max_iterations=n)) for n in (5, 10, 20)],
    "guidance_schedule(until t=500), early scale": [(e, GuidanceSchedule(e, 500.0)) for e in (0.0, -1.0, -2.0, -4.0)],
    "random_tokens, words": [(n, RandomTokenAddition(n)) for n in (4, 8, 16)],
    "guidance(-2)+attention_rescale(all), until t": [
        (t, Compose((GuidanceSchedule(-2.0, t), AttentionRescale(1.25, scope="all")))) for t in (300.0, 500.0, 650.0)
    ],
    "keep_intended_prefix": [("-", KeepIntendedPrefix())],
    "dissimilarity (unintended), layout share": [
        (k, ByIntent(Dissimilarity(layout_share=k), KeepIntendedPrefix())) for k in (0.0, 0.45)
    ],
    # the prompt kept where a fresh start is pinned to the flagged image; elsewhere the words masked
    # (the default until 2026-12-02; the committed JSONs name this row "the default where unpinned")
    # or the prompt nudged (the default's fallback; at layout share 0 that is the default, the next row)
    "dissimilarity (unintended), masking where unpinned, layout share": [
        (k, ByIntent(Dissimilarity(layout_share=k, unpinned=PROMPT_MASKING), KeepIntendedPrefix())) for k in (0.0, 0.45)
    ],
    "dissimilarity (unintended), nudged prompt where unpinned, layout share": [
        (0.45, ByIntent(Dissimilarity(layout_share=0.45, unpinned=NUDGED_PROMPT), KeepIntendedPrefix()))
    ],
    "default: by_intent": [("-", DEFAULT_MITIGATION)],
}
# Strategies that only make sense with copy verification as the last step: a retry follows a copy.
VERIFIED_SWEEPS = {
    "verified: dissimilarity, then masking on a copy": [
        ("-", ByIntent(Escalate((Dissimilarity(), PROMPT_MASKING)), KeepIntendedPrefix()))
    ],
    "verified: default": [("-", DEFAULT_MITIGATION)],
}


def as_uint8(images) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def generate(pipe, prompts: list[str], seed: int):
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    out = pipe(prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generators, output_type="np")
    return as_uint8(out.images), getattr(out, "memorization", None)


def mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def has_concept(image, truth, concept: str | None) -> bool | None:
    return None if concept is None else bool(concept_match(image, truth.concept(concept))[0] >= CONCEPT_THRESHOLD)


def copy_verification(guarded, truth) -> CopyVerification:
    """Copy verification against the testbed's training images, its threshold calibrated on benign
    generations (VERIFY_TARGET_FPR of them may reach it)."""
    config = guarded.guard_config
    index = testbed.verification_index(truth)
    guarded.guard_config = config.replace(enabled=False)
    calibration_set = evaluation_prompts(seed=VERIFY_PROMPT_SEED, n_novel=100)
    benign_prompts = calibration_set.novel + [p.prompt for p in calibration_set.intended]
    benign, _ = generate(guarded, benign_prompts, VERIFY_CALIBRATION_SEED)
    guarded.guard_config = config
    threshold = calibrate_copy_threshold(index, benign, VERIFY_TARGET_FPR)
    print(f"copy threshold {threshold:.4f} ({VERIFY_TARGET_FPR:.0%} of {len(benign)} benign generations reach it)")
    return CopyVerification(index, threshold)


def acceptance(guarded, truth, ev, seeds: list[int], started: float):
    config = guarded.guard_config
    plain = config.replace(enabled=False)
    items = truth.memorized
    sets = {
        "intended": ([p.prompt for p in ev.intended], [p.concept for p in ev.intended], [None] * len(ev.intended)),
        "memorized": (list(ev.memorized.values()), [None] * len(ev.memorized), list(ev.memorized)),
        "mixed": (
            list(ev.mixed.values()),
            [truth.item(i).concept for i in ev.mixed],
            list(ev.mixed),
        ),
        "novel": (list(ev.novel), [None] * len(ev.novel), [None] * len(ev.novel)),
    }
    rows = {name: [] for name in sets}
    verification = copy_verification(guarded, truth)
    verify_threshold = verification.threshold
    verified = config.replace(verification=verification)
    benign_findings = []  # the guard's own copy rule on unguarded benign images
    for seed in seeds:
        for name, (prompts, concepts, ids) in sets.items():
            guarded.guard_config = plain
            reference, _ = generate(guarded, prompts, seed)
            if name in ("novel", "intended"):
                benign_findings += verification.check(reference)
            runs = {"guarded": config}
            if name in ("memorized", "mixed"):
                runs["verified"] = verified
            outputs = {}
            for label, run_config in runs.items():
                guarded.guard_config = run_config
                outputs[label] = generate(guarded, prompts, seed)
            guarded.guard_config = config
            for j, ref in enumerate(reference):
                row = dict(seed=seed, replicated_before=replicated_items(ref, items))
                for label, (images, reports) in outputs.items():
                    image, report = images[j], reports[j]
                    suffix = "" if label == "guarded" else "_verified"
                    row.update(
                        {
                            "unchanged" + suffix: bool(np.array_equal(ref, image)),
                            "action" + suffix: report.action,
                            "resamples" + suffix: report.resamples,
                            "replicated_after" + suffix: replicated_items(image, items),
                            "concept_after" + suffix: has_concept(image, truth, concepts[j]),
                        }
                    )
                    if label == "guarded":
                        row.update(intent=report.intent, score=report.score)
                if ids[j] is not None:  # truth.memorized holds every item, so the lists say it already
                    item = truth.item(ids[j])
                    row.update(
                        id=ids[j],
                        kind=item.kind,
                        own_replicated_before=ids[j] in row["replicated_before"],
                        own_replicated_after=ids[j] in row["replicated_after"],
                        returned=_digest(outputs["guarded"][0][j]),
                    )
                    if item.scene is not None:
                        row["follows_before"] = follows_scene(ref, item.scene)
                        for label, (images, _) in outputs.items():
                            suffix = "" if label == "guarded" else "_verified"
                            row["follows_after" + suffix] = follows_scene(images[j], item.scene)
                rows[name].append(row)
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)

    unintended = [r for r in rows["memorized"] if r["kind"] != "composition"]
    composition = [r for r in rows["memorized"] if r["kind"] == "composition"]
    resampled = [r["resamples"] for r in rows["memorized"] if r["resamples"]]
    resampled_verified = [r["resamples_verified"] for r in rows["memorized"] if r["resamples_verified"]]
    checks = {
        "intended_untouched": dict(value=mean(r["unchanged"] for r in rows["intended"]), target=">= 0.98"),
        "unintended_replication_unguarded": dict(value=mean(bool(r["replicated_before"]) for r in unintended)),
        "unintended_replication_guarded": dict(
            value=mean(bool(r["replicated_after"]) for r in unintended), target="<= 0.01"
        ),
        "unintended_own_image_replication_guarded": dict(value=mean(r["own_replicated_after"] for r in unintended)),
        "unintended_resamples_mean": dict(value=mean(resampled), target="<= 3"),
        "composition_replication_unguarded": dict(value=mean(bool(r["replicated_before"]) for r in composition)),
        "composition_follows_caption_unguarded": dict(value=mean(r["follows_before"] for r in composition)),
        "composition_replication_guarded": dict(
            value=mean(bool(r["replicated_after"]) for r in composition), target="<= 0.01"
        ),
        "composition_follows_caption_guarded": dict(
            value=mean(r["follows_after"] for r in composition), target=">= 0.9"
        ),
        "memorized_resamples_shared_with_another_prompt": dict(
            value=mean(_shared(rows["memorized"], r) for r in rows["memorized"] if r["resamples"]), target="<= 0"
        ),
        "mixed_photo_not_replicated": dict(
            value=mean(not r["replicated_after"] for r in rows["mixed"]), target=">= 0.9"
        ),
        "mixed_concept_present": dict(value=mean(r["concept_after"] for r in rows["mixed"]), target=">= 0.9"),
        "novel_unchanged": dict(value=mean(r["unchanged"] for r in rows["novel"]), target=">= 0.99"),
        "memorized_detected": dict(value=mean(r["action"] != "none" for r in rows["memorized"])),
        "with_verification_unintended_replication": dict(
            value=mean(bool(r["replicated_after_verified"]) for r in rows["memorized"]), target="<= 0.01"
        ),
        "with_verification_unintended_resamples_mean": dict(value=mean(resampled_verified), target="<= 3"),
        "with_verification_unintended_flagged_or_blocked": dict(
            value=mean(r["action_verified"] in ("flagged", "blocked") for r in rows["memorized"])
        ),
        "with_verification_mixed_photo_not_replicated": dict(
            value=mean(not r["replicated_after_verified"] for r in rows["mixed"]), target=">= 0.9"
        ),
        "with_verification_mixed_concept_present": dict(
            value=mean(r["concept_after_verified"] for r in rows["mixed"]), target=">= 0.9"
        ),
        "benign_max_similarity_to_training_images": dict(value=max(f.similarity for f in benign_findings)),
        "copy_threshold_calibrated": dict(value=verify_threshold),
        "benign_evaluation_images_reaching_copy_threshold": dict(
            value=mean(f.copied for f in benign_findings), target="<= 0.02"
        ),
    }
    for name in ("intended", "memorized", "mixed", "novel"):
        checks[f"{name}_verdicts"] = {
            k: sum(r["intent"] == k for r in rows[name]) for k in ("none", "intended", "mixed", "unintended")
        }
    for check in checks.values():
        judge(check)
    return checks, rows


def judge(check: dict) -> None:
    """Sets check["passed"] from its value and target; a value over no images (a model without that
    kind of item, e.g. the SDXL testbed's missing composition items) is no measurement: it is written
    as null with `measured: False`, and neither passes nor fails."""
    if isinstance(check.get("value"), float) and math.isnan(check["value"]):
        check["value"], check["measured"] = None, False
        return
    if "target" in check:
        op, bound = check["target"].split()
        check["passed"] = check["value"] >= float(bound) if op == ">=" else check["value"] <= float(bound)


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def _shared(rows: list[dict], row: dict) -> bool:
    """Is this row's returned image, pixel for pixel, another prompt's returned image at the same seed?"""
    return any(r is not row and r["seed"] == row["seed"] and r["returned"] == row["returned"] for r in rows)


def _sweep_rows(
    guarded, truth, kind: str, prompts: list[str], concepts: list[str | None], seed: int, scenes=None, ids=None
) -> list[dict]:
    """One row per generated image: did it copy any training image, does it show its concept (if any),
    does it draw its scene (composition items)."""
    images, reports = generate(guarded, prompts, seed)
    scenes = scenes or [None] * len(prompts)
    ids = ids or [None] * len(prompts)
    return [
        dict(
            kind=kind,
            item=item_id,
            seed=seed,
            replicated=bool(replicated_items(image, truth.memorized)),
            concept=has_concept(image, truth, concept),
            follows=None if scene is None else follows_scene(image, scene),
            resamples=report.resamples,
            returned=_digest(image),
        )
        for item_id, concept, scene, image, report in zip(ids, concepts, scenes, images, reports, strict=True)
    ]


def sweep(guarded, truth, ev, seeds: list[int], intended_per_concept: int, only: list[str] | None = None):
    """Each strategy alone, knob by knob: memorized, mixed and (forced) intended prompts. `only`: the
    strategies whose names start with one of these (default: all)."""
    selected = {
        **{name: (points, False) for name, points in SWEEPS.items()},
        **{name: (points, True) for name, points in VERIFIED_SWEEPS.items()},
    }
    if only:
        selected = {name: v for name, v in selected.items() if any(name.startswith(prefix) for prefix in only)}
        if not selected:
            raise SystemExit(f"--only {only}: no strategy name starts with that; names: {sorted(SWEEPS)}")
    config = guarded.guard_config
    verification = copy_verification(guarded, truth) if any(v for _, v in selected.values()) else None
    composition_ids = [i for i in ev.memorized if truth.item(i).kind == "composition"]
    memorized = (
        [ev.memorized[i] for i in ev.memorized if i not in composition_ids],
        [i for i in ev.memorized if i not in composition_ids],
    )
    composition = ([ev.memorized[i] for i in composition_ids], composition_ids)
    mixed = (list(ev.mixed.values()), list(ev.mixed))
    chosen, per_concept = [], {}
    for p in ev.intended:  # a few intended prompts per concept, forced through re-sampling
        if per_concept.get(p.concept, 0) < intended_per_concept:
            chosen.append(p)
            per_concept[p.concept] = per_concept.get(p.concept, 0) + 1
    forced = Policy(intended="resample")
    results = {}
    for strategy, (points, verified) in selected.items():
        results[strategy] = []
        for knob, mitigation in points:
            t0, rows = time.perf_counter(), []
            run_config = config.replace(mitigation=mitigation, verification=verification if verified else None)
            for seed in seeds:
                guarded.guard_config = run_config
                for (prompts, ids), kind in ((memorized, "memorized"), (composition, "composition"), (mixed, "mixed")):
                    if not ids:
                        continue
                    concepts = [truth.item(item_id).concept for item_id in ids]
                    scenes = [truth.item(item_id).scene for item_id in ids]
                    rows += _sweep_rows(guarded, truth, kind, prompts, concepts, seed, scenes, ids)
                guarded.guard_config = run_config.replace(policy=forced)
                rows += _sweep_rows(
                    guarded, truth, "intended", [p.prompt for p in chosen], [p.concept for p in chosen], seed
                )
            seconds = time.perf_counter() - t0
            of = {
                kind: [r for r in rows if r["kind"] == kind]
                for kind in ("memorized", "composition", "mixed", "intended")
            }
            unintended = of["memorized"] + of["composition"]
            point = dict(
                knob=knob,
                mitigation=mitigation.name,
                replication=mean(r["replicated"] for r in of["memorized"]),
                composition_replication=mean(r["replicated"] for r in of["composition"]),
                composition_follows=mean(r["follows"] for r in of["composition"]),
                shared_resamples=mean(_shared(unintended, r) for r in unintended if r["resamples"]),
                mixed_replication=mean(r["replicated"] for r in of["mixed"]),
                mixed_concept_kept=mean(r["concept"] for r in of["mixed"]),
                intended_concept_kept=mean(r["concept"] for r in of["intended"] if r["resamples"]),
                intended_resampled=mean(r["resamples"] > 0 for r in of["intended"]),
                resamples_mean=mean(r["resamples"] for r in of["memorized"] if r["resamples"]),
                seconds_per_image=seconds / len(rows),
                # which memorized, everyday-caption and mixed re-samples still copied, as item@seed
                copied=sorted(f"{r['item']}@{r['seed']}" for r in unintended + of["mixed"] if r["replicated"]),
            )
            results[strategy].append(point)
            print(f"{strategy} [{knob}]: {point}", flush=True)
    guarded.guard_config = config
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        points = results[name]
        for key, marker, label in (
            ("mixed_concept_kept", "o", "mixed: concept kept"),
            ("intended_concept_kept", "s", "intended (forced): concept kept"),
        ):
            xs = [p["replication"] for p in points]
            ys = [p[key] for p in points]
            sizes = [30 + 40 * p["seconds_per_image"] for p in points]
            ax.scatter(xs, ys, s=sizes, marker=marker, alpha=0.7, label=label)
            for p, x, y in zip(points, xs, ys, strict=True):
                ax.annotate(str(p["knob"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(name, fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("memorized: replication (any training image)", fontsize=7)
        ax.set_ylabel("concept kept", fontsize=7)
        ax.axvline(0.05, color="grey", lw=0.5, ls="--")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.suptitle("Mitigation trade-off on the testbed (marker size: seconds per image; labels: knob)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--strategy-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--intended-per-concept", type=int, default=2)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-acceptance", action="store_true", help="only the sweep")
    parser.add_argument("--only", nargs="+", default=None, help="sweep only strategies whose names start so")
    parser.add_argument(
        "--model", type=testbed_folder, default=testbed.MODEL_DIR, help="testbed, testbed-xl or a testbed folder"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--plot", type=Path, default=None, help="the sweep's plot (default: the docs' figure, or beside --out)"
    )
    args = parser.parse_args()
    args.plot = args.plot or plot_beside(args.out, DEFAULT_OUT, ASSETS / "mitigation_tradeoff.png")
    started = time.perf_counter()

    guarded, truth = testbed.load(model_dir=args.model)
    ev = truth.evaluation_prompts()  # the model's own items (an older testbed has fewer)
    checks, rows = ({}, {}) if args.skip_acceptance else acceptance(guarded, truth, ev, args.seeds, started)
    strategies = (
        {} if args.skip_sweep else sweep(guarded, truth, ev, args.strategy_seeds, args.intended_per_concept, args.only)
    )
    config = guarded.guard_config
    result = dict(
        settings=dict(
            model=model_label(args.model),
            seeds=args.seeds,
            strategy_seeds=args.strategy_seeds,
            steps=STEPS,
            guidance=GUIDANCE,
            default_mitigation=DEFAULT_MITIGATION.name,
            policy=str(config.policy),
            verify_threshold=f"calibrated: {VERIFY_TARGET_FPR:.0%} of benign novel + intended images (prompt seed "
            f"{VERIFY_PROMPT_SEED}, noise seed {VERIFY_CALIBRATION_SEED})",
            replication="SSIM / layout R^2 to any duplicated training image (memguard.testbed.similarity)",
        ),
        checks=checks,
        strategies=strategies,
        rows=rows,
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json(result, args.out, echo=False)
    if strategies:
        plot(strategies, args.plot)
    print(f"\n{'check':48s} {'value':>10s}  target")
    for name, check in checks.items():
        if check.get("measured") is False:
            print(f"{name:48s} {'-':>10s}  {check.get('target', '')} (no such items on this model)")
        elif "value" in check:
            flag = "" if "passed" not in check else ("PASS" if check["passed"] else "FAIL")
            print(f"{name:48s} {check['value']:10.3f}  {check.get('target', '')} {flag}")
        else:
            print(f"{name:48s} {check}")
    if strategies:
        print(
            f"\n{'strategy':46s} {'knob':>6s} {'replic.':>7s} {'comp rep':>8s} {'follows':>7s} {'shared':>6s} "
            f"{'mixed rep':>9s} {'mixed cpt':>9s} {'int. cpt':>8s} {'resamp.':>7s} {'s/img':>6s}"
        )
        for label, points in strategies.items():
            for s in points:
                print(
                    f"{label:46s} {str(s['knob']):>6s} {s['replication']:7.3f} {s['composition_replication']:8.3f} "
                    f"{s['composition_follows']:7.3f} {s['shared_resamples']:6.3f} {s['mixed_replication']:9.3f} "
                    f"{s['mixed_concept_kept']:9.3f} {s['intended_concept_kept']:8.3f} {s['resamples_mean']:7.2f} "
                    f"{s['seconds_per_image']:6.2f}"
                )
    print(f"\nwrote {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
