"""Intent benchmark: how often is the guard's intent verdict right?

1. Testbed: every evaluation prompt of the testbed (intended-concept, unintended memorized, mixed,
   novel), each seed, scored by the guard at its decision step with `pipe.score(...)` (no image is
   finished): the verdict (intended / unintended / mixed / none) against the testbed's truth, as a
   4x4 confusion matrix with per-class recall. The shipped calibration and the testbed's registry
   (memguard/testbed/registry.yaml), the default policy. One prompt per call, so each prompt's
   generator is seeded with the seed itself, as in benchmarks/mitigation.py.
2. Real world: the example registry of public-domain works and landmarks
   (examples/registries/public_domain_example.yaml) against benchmarks/data/memorized_style_prompts.txt:
   memorized-style captions (book covers, product listings, headlines, podcast and album art, movie
   posters; none asks for a registered work), controls that do name one, and near-misses that contain a
   registered name but mean something else. The testbed cannot render these, so this part evaluates
   the intent resolution alone (`memguard.intent.IntentResolver.resolve`, the function the guard calls)
   in the worst case: as if the detector flagged the prompt and attention put the signal on every word.
   The guard would then score the prompt without its registered mentions (the residual); the verdict
   is given both ways: the residual clears (the mentions explain the signal -> "intended", an upper
   bound on "intended") and the rest still memorizes (-> "mixed"). Implicit matching (open_clip) is
   used only where open_clip imports and `--no-implicit` is not given; the JSON says whether it was.
3. Fresh intended prompts: the 16 intended prompts of the evaluation set are few, and a verdict is
   nearly a property of the prompt (its seeds differ little), so one unlucky prompt moves the share by
   6%. The same generator, other prompt seeds (`--fresh-intended-seeds`), gives more distinct intended
   prompts; each is scored once (noise seed 0). Judged "mixed" means re-sampled by the default policy;
   "intended" or "none" means left untouched, so this estimates the "intended untouched" figure as a rate.
   `--peers [DIR]` also reads the peers' prompt files (DIR/*/*.txt|jsonl, by default
   ../shared/data/peers) at run time; only counts, line numbers and the matched registered phrases
   are written, never their prompts.

    python benchmarks/intent.py [--seeds 0 1 2 3] [--model DIR] [--peers [DIR]] [--no-implicit]

Writes benchmarks/results/intent.json and intent_confusion.png (with another --out, a figure named after it:
intent_xl.json, intent_confusion_xl.png); prints the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict
from datetime import date
from pathlib import Path

import torch

from memguard.intent import ImplicitMatcher, IntentRegistry, IntentResolver, IntentVerdict
from memguard.intent.registry import words_with_offsets
from memguard.prompts_file import read_prompts
from memguard.testbed import folder as testbed_folder
from memguard.thresholds import wilson_interval

sys.path.insert(0, str(Path(__file__).parent))  # the shared _results module beside this script
from _results import plot_beside  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PROMPTS_FILE = HERE / "data" / "memorized_style_prompts.txt"
EXAMPLE_REGISTRY = ROOT / "examples" / "registries" / "public_domain_example.yaml"
PEERS = ROOT.parent / "shared" / "data" / "peers"
STEPS, GUIDANCE = 50, 7.5
CLASSES = ("intended", "unintended", "mixed", "none")  # truth rows and verdict columns, in this order
SECTIONS = ("memorized_style", "control", "near_miss")
NOTE = " -- "  # near_miss lines: "prompt -- what it really refers to"


def read_sections(path: Path = PROMPTS_FILE) -> dict[str, list[tuple[str, str]]]:
    """{section: [(prompt, note)]} from the prompts file: "# [name]" opens a section, other "#" lines are
    comments, blank lines are skipped; the note is what follows " -- " on a line (empty if none)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if line.startswith("# [") and line.endswith("]"):
            current = line[3:-1]
            if current in sections:
                raise ValueError(f"{path}:{number}: section [{current}] opened twice")
            sections[current] = []
        elif line and not line.startswith("#"):
            if current is None:
                raise ValueError(f"{path}:{number}: a prompt before the first section")
            prompt, _, note = line.partition(NOTE)
            sections[current].append((prompt.strip(), note.strip()))
    return sections


def _shown(path: Path) -> str:
    """`path` relative to the repository root."""
    return os.path.relpath(path.resolve(), ROOT)


def _finite(value) -> float | None:
    return round(float(value), 5) if value is not None and math.isfinite(value) else None


# --- 1. the testbed ------------------------------------------------------------------------------------
def testbed_rows(pipe, truth, seeds: list[int], model_dir: Path) -> tuple[list[dict], dict]:
    """Every evaluation prompt and seed scored by `pipe` (the testbed loaded from `model_dir`)."""
    from memguard import testbed

    config = pipe.guard_config
    ev = truth.evaluation_prompts()  # the model's own items (an older testbed has fewer)
    items = (
        [("intended", f"i{k:02d}", p.prompt, p.concept) for k, p in enumerate(ev.intended)]
        + [("unintended", key, prompt, None) for key, prompt in ev.memorized.items()]
        + [("mixed", key, prompt, truth.item(key).concept) for key, prompt in ev.mixed.items()]
        + [("none", f"n{k:02d}", prompt, None) for k, prompt in enumerate(ev.novel)]
    )
    rows = []
    for seed in seeds:
        for label, item_id, prompt, concept in items:
            # one prompt per call: its generator is seeded with `seed` itself (score() seeds prompt i with seed + i)
            (report,) = pipe.score(
                [prompt], seed=seed, progress=False, num_inference_steps=STEPS, guidance_scale=GUIDANCE
            )
            rows.append(
                dict(
                    seed=seed,
                    truth=label,
                    id=item_id,
                    prompt=prompt,  # the testbed's own synthetic prompts
                    concept=concept,
                    verdict=report.intent,
                    memorized=report.memorized,
                    score=_finite(report.score),
                    residual_score=_finite(report.residual_score),
                    reference_score=_finite(report.reference_score),
                    triggers=[asdict(t) for t in report.triggers],
                )
            )
    settings = dict(
        model=_shown(model_dir),
        registry=str(testbed.REGISTRY_FILE.relative_to(ROOT)),
        threshold=report.threshold,
        threshold_source=report.threshold_source,
        detector=report.detector,
        decided_at_step=report.decided_at_step,
        attribution=config.attribution,
        residual_draws=config.residual_draws,
        implicit=config.implicit is not None,
        policy=str(config.policy),
        steps=STEPS,
        guidance=GUIDANCE,
        seeds=seeds,
        prompts={label: sum(1 for item in items if item[0] == label) for label in CLASSES},
    )
    return rows, settings


def fresh_intended(pipe, prompt_seeds: list[int]) -> dict:
    """Verdicts of `pipe` (the guarded testbed) on intended prompts drawn with other prompt seeds than the
    evaluation set (see part 3)."""
    from memguard.testbed.data import evaluation_prompts

    seen = {p.prompt for p in evaluation_prompts().intended}
    prompts = []
    for prompt_seed in prompt_seeds:
        for p in evaluation_prompts(seed=prompt_seed, n_novel=0).intended:
            if p.prompt not in seen:
                seen.add(p.prompt)
                prompts.append(p.prompt)
    reports = pipe.score(prompts, seed=0, progress=False, num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    verdicts = Counter(r.intent for r in reports)
    left_alone = verdicts.get("intended", 0) + verdicts.get("none", 0)
    return dict(
        prompt_seeds=prompt_seeds,
        prompts=len(prompts),
        verdicts={v: verdicts.get(v, 0) for v in CLASSES},
        left_alone=left_alone / len(prompts),
        left_alone_wilson_95=list(wilson_interval(left_alone, len(prompts))),
        judged_mixed=[
            dict(prompt=p, score=_finite(r.score), residual_score=_finite(r.residual_score))
            for p, r in zip(prompts, reports, strict=True)
            if r.intent == "mixed"
        ],
    )


def confusion(rows: list[dict]) -> dict[str, dict[str, int]]:
    return {t: {v: sum(r["truth"] == t and r["verdict"] == v for r in rows) for v in CLASSES} for t in CLASSES}


def testbed_figures(rows: list[dict]) -> dict:
    matrix = confusion(rows)

    def share(truth: str, verdicts: tuple[str, ...]) -> float:
        total = sum(matrix[truth].values())
        return sum(matrix[truth][v] for v in verdicts) / total if total else float("nan")

    return dict(
        confusion=matrix,
        recall={c: share(c, (c,)) for c in CLASSES},
        precision={v: matrix[v][v] / col if (col := sum(matrix[t][v] for t in CLASSES)) else None for v in CLASSES},
        headline={
            "intended_left_alone (intended or none)": share("intended", ("intended", "none")),
            "intended_judged_intended": share("intended", ("intended",)),
            "intended_judged_none (under the threshold)": share("intended", ("none",)),
            "memorized_judged_unintended": share("unintended", ("unintended",)),
            "mixed_judged_mixed": share("mixed", ("mixed",)),
            "novel_judged_none": share("none", ("none",)),
        },
        flagged={c: share(c, ("intended", "unintended", "mixed")) for c in CLASSES},
        intended_by_concept={
            concept: dict(Counter(r["verdict"] for r in rows if r["truth"] == "intended" and r["concept"] == concept))
            for concept in sorted({r["concept"] for r in rows if r["truth"] == "intended"})
        },
        mixed_triggers=[
            {k: r[k] for k in ("id", "seed", "prompt", "concept", "verdict", "score", "residual_score", "triggers")}
            for r in rows
            if r["truth"] == "mixed"
        ],
    )


# --- 2. real-world prompts against the example registry -------------------------------------------------
def worst_case(resolver: IntentResolver, prompt: str, *, residual_clears: bool) -> tuple[IntentVerdict, list[str]]:
    """The verdict if the detector flagged `prompt` and every word carried the same share of the signal;
    the residual (the prompt without its allowed mentions) clears the threshold or not. Also returns the
    texts the guard would have scored as residuals."""
    words = words_with_offsets(prompt)
    scored: list[str] = []

    def residual(text: str) -> float:
        scored.append(text)
        return -math.inf if residual_clears else math.inf

    verdict = resolver.resolve(
        prompt,
        memorized=True,
        token_scores=torch.ones(len(words)),
        offsets=[(start, end) for _, start, end in words],
        threshold=0.0,
        residual=residual,
    )
    return verdict, scored


def judge(resolver: IntentResolver, prompt: str) -> dict:
    verdict, scored = worst_case(resolver, prompt, residual_clears=True)
    if_rest_memorizes, _ = worst_case(resolver, prompt, residual_clears=False)
    return dict(
        verdict=verdict.intent,
        verdict_if_rest_memorizes=if_rest_memorizes.intent,
        mentions=[
            dict(text=prompt[m.start : m.end], concept=m.concept.name, how=m.how, similarity=round(m.similarity, 4))
            for m in verdict.mentions
        ],
        residual_text=scored[0] if scored else None,
        spared=[prompt[s:e] for s, e in verdict.intended_spans],
    )


def implicit_matcher(registry: IntentRegistry, benign: list[str]) -> tuple[ImplicitMatcher | None, str]:
    """open_clip's matcher calibrated at 1% FPR on `benign`, or None and why not."""
    try:
        from memguard.intent import OpenClipTextEmbedder

        embedder = OpenClipTextEmbedder()
    except Exception as error:  # ImplicitIntentUnavailable (no open_clip / torchvision), or no weights offline
        return None, f"{type(error).__name__}: {error}"
    matcher = ImplicitMatcher.calibrate(registry, embedder, benign, target_fpr=0.01)
    return matcher, f"{embedder.name}, threshold {matcher.threshold:.4f} (1% FPR on {len(benign)} benign prompts)"


def set_summary(judged: list[dict]) -> dict:
    n = len(judged)
    counts = Counter(j["verdict"] for j in judged)
    rest = Counter(j["verdict_if_rest_memorizes"] for j in judged)
    return dict(
        n=n,
        verdicts={c: counts[c] for c in CLASSES},
        intended_share=counts["intended"] / n if n else float("nan"),
        verdicts_if_rest_memorizes={c: rest[c] for c in CLASSES},
    )


def real_world(sections: dict, registry: IntentRegistry, matcher: ImplicitMatcher | None) -> dict:
    resolvers = {"explicit": IntentResolver(registry)}
    if matcher is not None:
        resolvers["explicit+implicit"] = IntentResolver(registry, matcher)
    out = {}
    for name, resolver in resolvers.items():
        per_set = {}
        for section, entries in sections.items():
            judged = [dict(prompt=p, note=note, **judge(resolver, p)) for p, note in entries]
            per_set[section] = dict(summary=set_summary(judged), prompts=judged)
        out[name] = per_set
    return out


def peer_sets(directory: Path, resolver: IntentResolver) -> list[dict]:
    """Worst-case verdicts on the peers' prompt files, read at run time; their prompts are not written."""
    results = []
    for path in sorted(directory.glob("*/*")):
        if path.suffix.lower() not in (".txt", ".jsonl"):
            continue
        prompts = read_prompts(path)
        judged = [judge(resolver, p.text) for p in prompts]
        results.append(
            dict(
                file=str(path.relative_to(directory)),
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                summary=set_summary(judged),
                names_a_registered_work=sum(bool(j["mentions"]) for j in judged),
                intended_lines=[
                    dict(line=p.line, mentions=[f"{m['text']} -> {m['concept']}" for m in j["mentions"]])
                    for p, j in zip(prompts, judged, strict=True)
                    if j["verdict"] == "intended"
                ],
            )
        )
    return results


# --- output ----------------------------------------------------------------------------------------------
def _print(payload: dict) -> None:
    tb = payload["testbed"]
    s = tb["settings"]
    print(
        f"\ntestbed on {payload['device']}: seeds {s['seeds']}, prompts {s['prompts']}, detector {s['detector']} "
        f"at step {s['decided_at_step']}, threshold {s['threshold']:.4f} ({s['threshold_source']})"
    )
    print("confusion: rows truth, columns the guard's verdict (prompts x seeds)")
    print(f"{'truth':>12s} {'n':>4s} " + " ".join(f"{v:>10s}" for v in CLASSES) + f" {'recall':>7s} {'flagged':>8s}")
    for t in CLASSES:
        row = tb["confusion"][t]
        cells = " ".join(f"{row[v]:10d}" for v in CLASSES)
        print(f"{t:>12s} {sum(row.values()):4d} {cells} {tb['recall'][t]:7.3f} {tb['flagged'][t]:8.3f}")
    print("\n" + "\n".join(f"  {k:45s} {v:.3f}" for k, v in tb["headline"].items()))
    print("\nintended prompts' verdicts by concept:")
    for concept, counts in tb["intended_by_concept"].items():
        print(f"  {concept:20s} {counts}")
    fresh = tb.get("fresh_intended")
    if fresh:
        print(
            f"\nfresh intended prompts ({fresh['prompts']}, prompt seeds {fresh['prompt_seeds'][0]}-"
            f"{fresh['prompt_seeds'][-1]}, noise seed 0): {fresh['verdicts']}; left alone {fresh['left_alone']:.3f} "
            f"(Wilson 95% {fresh['left_alone_wilson_95'][0]:.3f}-{fresh['left_alone_wilson_95'][1]:.3f})"
        )
        for r in fresh["judged_mixed"]:
            print(f"  mixed: {r['prompt']!r} score {r['score']:.4f} residual {r['residual_score']:.4f}")
    print("\nmixed prompts (triggers; * = an intended, registered concept):")
    for r in tb["mixed_triggers"]:
        spans = " | ".join(t["text"] + ("*" if t["intended"] else "") for t in r["triggers"]) or "-"
        residual = f"{r['residual_score']:.4f}" if r["residual_score"] is not None else "-"
        print(
            f"  {r['id']} seed {r['seed']}: {r['verdict']:10s} score {r['score']:.4f} residual {residual:>6s}  {spans}"
        )

    rw = payload["real_world"]
    print(f"\nreal world: {rw['registry']} ({rw['concepts']} concepts); worst case: every word a trigger")
    print(f"implicit intent: {'on' if rw['implicit']['available'] else 'off'} -- {rw['implicit']['detail']}")
    for mode, per_set in rw["results"].items():
        print(f"\n[{mode}] verdict if the residual clears | if the rest still memorizes")
        print(f"{'set':>16s} {'n':>4s} " + " ".join(f"{v:>10s}" for v in CLASSES) + "  | " + "mixed unintended")
        for section, result in per_set.items():
            summary = result["summary"]
            cells = " ".join(f"{summary['verdicts'][v]:10d}" for v in CLASSES)
            rest = summary["verdicts_if_rest_memorizes"]
            print(f"{section:>16s} {summary['n']:4d} {cells}  | {rest['mixed']:5d} {rest['unintended']:10d}")
        for section, wanted in (("memorized_style", False), ("control", True)):
            wrong = [p for p in per_set.get(section, {}).get("prompts", []) if (p["verdict"] == "intended") != wanted]
            label = "false 'intended'" if not wanted else "controls not judged intended"
            print(f"  {label} ({section}): {len(wrong)}")
            for p in wrong:
                print(f"    {p['prompt']!r} -> {p['verdict']} {[m['text'] for m in p['mentions']]}")
        print("  near-misses:")
        for p in per_set.get("near_miss", {}).get("prompts", []):
            mentions = ", ".join(f"{m['text']!r}->{m['concept']}" for m in p["mentions"]) or "no mention"
            print(f"    {p['verdict']:10s} {p['prompt']!r} [{mentions}] ({p['note']})")
    for peer in rw.get("peers") or []:
        summary = peer["summary"]
        matched = Counter(m for line in peer["intended_lines"] for m in line["mentions"])
        print(
            f"\npeers {peer['file']}: {summary['n']} prompts, {peer['names_a_registered_work']} name a registered "
            f"work -> 'intended' if flagged; {dict(matched)}"
        )


def _plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tb = payload["testbed"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw=dict(width_ratios=[1, 1.2]))
    counts = [[tb["confusion"][t][v] for v in CLASSES] for t in CLASSES]
    shares = [[c / max(sum(row), 1) for c in row] for row in counts]
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if shares[i][j] > 0.6 else "black")
    ax.set_xticks(range(4), CLASSES, fontsize=8)
    ax.set_yticks(range(4), [f"{t}\n(n={sum(row)})" for t, row in zip(CLASSES, counts, strict=True)])
    ax.set_xlabel("guard's verdict")
    ax.set_ylabel("testbed truth")
    ax.set_title(f"Testbed: verdict vs. truth ({len(tb['settings']['seeds'])} seeds)")

    rw = payload["real_world"]
    mode = "explicit+implicit" if "explicit+implicit" in rw["results"] else "explicit"
    labels, values = [], []
    for section, result in rw["results"][mode].items():
        labels.append(f"{section} (n={result['summary']['n']})")
        values.append(result["summary"]["intended_share"])
    for peer in rw.get("peers") or []:
        name = Path(peer["file"])
        labels.append(f"peers {name.parent}/{name.stem[:16]} (n={peer['summary']['n']})")
        values.append(peer["summary"]["intended_share"])
    bars = bx.barh(range(len(values)), values, color="tab:orange")
    bx.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    bx.set_yticks(range(len(labels)), labels, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlim(0, 1.15)
    bx.set_xlabel("share judged 'intended'")
    bx.set_title(f"Example registry, {mode} matching\n(worst case: every word a trigger, residual clears)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument(
        "--model", type=testbed_folder, default=None, help="testbed (default), testbed-xl or a testbed folder"
    )
    parser.add_argument("--prompts", type=Path, default=PROMPTS_FILE, help="memorized-style, control, near-miss")
    parser.add_argument("--registry", type=Path, default=EXAMPLE_REGISTRY)
    parser.add_argument("--peers", type=Path, nargs="?", const=PEERS, default=None, help=f"default {PEERS}")
    parser.add_argument(
        "--implicit-benign", type=Path, default=None, help="benign prompts to calibrate open_clip matching on"
    )
    parser.add_argument(
        "--no-implicit", action="store_true", help="explicit matching only, even where open_clip imports"
    )
    parser.add_argument(
        "--fresh-intended-seeds",
        type=int,
        nargs="*",
        default=list(range(2000, 2036)),  # 36 prompt seeds: over 300 distinct prompts
        help="prompt seeds for part 3 (none: skip it)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "intent.json")
    parser.add_argument("--plot", type=Path, default=None, help="the confusion figure (default: beside --out)")
    args = parser.parse_args()
    args.plot = args.plot or plot_beside(args.out, RESULTS / "intent.json", RESULTS / "intent_confusion.png")
    torch.set_num_threads(1)
    started = time.perf_counter()

    from memguard import testbed

    model_dir = args.model or testbed.MODEL_DIR
    pipe, truth = testbed.load(model_dir=model_dir)
    rows, settings = testbed_rows(pipe, truth, args.seeds, model_dir)
    testbed_part = dict(settings=settings, **testbed_figures(rows), rows=rows)
    if args.fresh_intended_seeds:
        testbed_part["fresh_intended"] = fresh_intended(pipe, args.fresh_intended_seeds)
    print(f"testbed scored ({time.perf_counter() - started:.0f} s)", flush=True)

    registry = IntentRegistry.load(args.registry)
    if args.implicit_benign is not None:
        benign, benign_name = [p.text for p in read_prompts(args.implicit_benign)], str(args.implicit_benign)
    else:
        from memguard.testbed.data import calibration_prompts

        benign, benign_name = calibration_prompts(), "memguard.testbed.data.calibration_prompts()"
    if args.no_implicit:
        matcher, detail = None, "not tried (--no-implicit)"
    else:
        matcher, detail = implicit_matcher(registry, benign)
    sections = read_sections(args.prompts)
    real = dict(
        registry=_shown(args.registry),
        concepts=len(registry),
        prompts_file=_shown(args.prompts),
        mode="worst case: the prompt is flagged and every word is a trigger span; 'verdict' assumes the residual "
        "(the prompt without its allowed mentions) clears the threshold, 'verdict_if_rest_memorizes' that it does not",
        implicit=dict(available=matcher is not None, detail=detail, benign=benign_name if matcher else None),
        results=real_world(sections, registry, matcher),
    )
    if args.peers is not None:
        real["peers_dir"] = _shown(args.peers)
        real["peers"] = peer_sets(args.peers, IntentResolver(registry, matcher))

    payload = dict(
        date=date.today().isoformat(),
        device=f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        testbed=testbed_part,
        real_world=real,
        seconds=round(time.perf_counter() - started, 1),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    _print(payload)
    _plot(payload, args.plot)
    print(f"\nwrote {args.out} and {args.plot} in {payload['seconds']} s")


if __name__ == "__main__":
    main()
