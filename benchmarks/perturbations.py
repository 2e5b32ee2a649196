"""Memorized captions changed slightly: does the model still copy, and does the guard still catch it?

    python benchmarks/perturbations.py [--model testbed|testbed-xl|DIR] [--variants 2] [--seeds 500 501 502 503]
                                       [--no-policy-run] [--out benchmarks/results/perturbations.json]
    python benchmarks/perturbations.py --write-suite FILE.jsonl   # the suite only (e.g. for detection.py)

Every memorized and mixed caption of the testbed gets `--variants` variants of each kind below, drawn
with a fixed random seed (`SUITE_SEED`, apart from every seed the guard or the testbed was tuned on):

- word_drop, word_insert, word_swap: one word removed, one filler word added, two neighbours swapped;
- typo: one letter substituted, dropped, doubled or two letters transposed in a word of >= 4 letters;
- leading, trailing: a common prompt phrase before or after the caption ("a photo of", ", 4k");
- embedded: the caption inside a longer sentence;
- paraphrase: common words replaced by synonyms (a fixed table; a caption with none of its words
  keeps its meaning with "the"/"a" swapped instead).

Each variant is generated on the noise seeds `--seeds` (apart from the benchmarks' 0-11) with the
guard in flag mode, which returns the parent's image bit for bit: the testbed's own similarity rules
say whether it replicates its item (or any training image), and the report whether the guard caught
it at the calibrated threshold. With the default policy (re-sample unintended and mixed), a second
pass measures how many returned images are still copies. Reported per kind and overall: the share of
variants that still replicate, the guard's TPR on those copies, its score distribution, and the
copies returned.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import model_label, testbed_folder, write_json  # noqa: E402

from memguard import Policy, testbed  # noqa: E402
from memguard.testbed.similarity import item_similarity, replicated_items, replicates  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SUITE_SEED = 19_019
STEPS, GUIDANCE = 50, 7.5
KINDS = ("word_drop", "word_insert", "word_swap", "typo", "leading", "trailing", "embedded", "paraphrase")

FILLERS = ("new", "old", "small", "bright", "classic", "the", "very", "little", "official", "big")
LEADING = ("a photo of", "an image of", "a picture of", "high quality,", "a close-up of", "a scan of")
TRAILING = (", 4k", ", highly detailed", ", trending on artstation", " in high resolution", ", photograph")
SENTENCES = (
    "I found {} at the market yesterday",
    "here is {}, exactly as described",
    "my friend showed me {} last week",
    "on the table lies {}, next to a cup",
    "we talked about {} for an hour",
)
SYNONYMS = {
    "art": "artwork",
    "album": "record",
    "audiobook": "audio book",
    "book": "volume",
    "classic": "traditional",
    "cover": "jacket",
    "cozy": "snug",
    "city": "town",
    "edition": "release",
    "episode": "installment",
    "for": "made for",
    "lake": "pond",
    "lecture": "talk",
    "living": "sitting",
    "modern": "contemporary",
    "morning": "dawn",
    "narrated": "read",
    "night": "nighttime",
    "novel": "story",
    "official": "authorized",
    "old": "elderly",
    "pattern": "design",
    "photo": "photograph",
    "portrait": "likeness",
    "poster": "placard",
    "printable": "ready to print",
    "retro": "vintage",
    "road": "route",
    "season": "series",
    "secrets": "mysteries",
    "series": "course",
    "set": "collection",
    "special": "limited",
    "sunset": "dusk",
    "view": "shot",
    "walking": "strolling",
    "with": "featuring",
}


@dataclass(frozen=True)
class Variant:
    item: str  # the training item the caption belongs to
    kind: str
    caption: str  # the original
    prompt: str  # the perturbed caption


def _words(caption: str) -> list[str]:
    return caption.split()


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)  # keep the first and last letters
    edit = rng.choice(("substitute", "drop", "double", "transpose"))
    if edit == "substitute":
        letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != word[i].lower()]
        return word[:i] + rng.choice(letters) + word[i + 1 :]
    if edit == "drop":
        return word[:i] + word[i + 1 :]
    if edit == "double":
        return word[:i] + word[i] + word[i:]
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]


def _paraphrase(caption: str, rng: random.Random) -> str:
    words = _words(caption)
    replaceable = [i for i, w in enumerate(words) if w.lower().strip(":,.") in SYNONYMS]
    if not replaceable:  # no table word: the articles change, which keeps the meaning
        swapped = [{"the": "a", "a": "the", "The": "A", "A": "The"}.get(w, w) for w in words]
        return " ".join(swapped) if swapped != words else "the " + caption
    chosen = rng.sample(replaceable, k=min(len(replaceable), max(1, len(replaceable) // 2)))
    for i in chosen:
        word = words[i]
        core = word.lower().strip(":,.")
        replacement = SYNONYMS[core]
        if word[:1].isupper():
            replacement = replacement[:1].upper() + replacement[1:]
        words[i] = word.replace(word.strip(":,."), replacement) if word.strip(":,.") else replacement
    return " ".join(words)


def perturb(caption: str, kind: str, rng: random.Random) -> str:
    """One variant of `caption` of the given kind (deterministic for a given `rng` state)."""
    words = _words(caption)
    if kind == "word_drop":
        if len(words) < 3:
            return caption + " " + rng.choice(FILLERS)  # nothing to drop without losing the caption
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if kind == "word_insert":
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
        return " ".join(words)
    if kind == "word_swap":
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    if kind == "typo":
        long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        i = rng.choice(long_words) if long_words else max(range(len(words)), key=lambda j: len(words[j]))
        if len(words[i]) >= 3:
            words[i] = _typo(words[i], rng)
        return " ".join(words)
    if kind == "leading":
        return f"{rng.choice(LEADING)} {caption}"
    if kind == "trailing":
        suffix = rng.choice(TRAILING)
        return caption + suffix
    if kind == "embedded":
        return rng.choice(SENTENCES).format(caption)
    if kind == "paraphrase":
        return _paraphrase(caption, rng)
    raise ValueError(f"unknown perturbation kind {kind!r}; expected one of {KINDS}")


def build_suite(captions: dict[str, str], variants: int, seed: int = SUITE_SEED) -> list[Variant]:
    """`variants` distinct variants of every kind for every caption (fewer when a kind cannot make that
    many distinct ones), never the caption itself."""
    rng = random.Random(seed)
    suite = []
    for item, caption in captions.items():
        for kind in KINDS:
            made: list[str] = []
            for _ in range(20 * variants):  # bounded retries for distinct variants
                prompt = re.sub(r"\s+", " ", perturb(caption, kind, rng)).strip()
                if prompt != caption and prompt not in made:
                    made.append(prompt)
                if len(made) == variants:
                    break
            suite += [Variant(item, kind, caption, p) for p in made]
    return suite


def _generate(pipe, prompts: list[str], seed: int, batch_size: int, steps: int = STEPS):
    images, reports = [], []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed * 100_003 + start + j) for j in range(len(batch))]
        out = pipe(batch, num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generators, output_type="np")
        images += list((out.images * 255).round().astype(np.uint8))
        reports += out.memorization
    return images, reports


def _summary(rows: list[dict], policy_run: bool) -> dict:
    copies = [r for r in rows if r["replicates_own"]]
    scores = sorted(r["score"] for r in copies)
    summary = {
        "images": len(rows),
        "replicate_own": len(copies) / len(rows) if rows else None,
        "replicate_any": sum(r["replicates_any"] for r in rows) / len(rows) if rows else None,
        "copies": len(copies),
        "tpr_on_copies": sum(r["caught"] for r in copies) / len(copies) if copies else None,
        "missed_copies": len(copies) - sum(r["caught"] for r in copies),
        "copy_score_min": scores[0] if scores else None,
        "copy_score_median": scores[len(scores) // 2] if scores else None,
    }
    if policy_run:
        summary["returned_copies_any"] = sum(r["returned_copy_any"] for r in rows) / len(rows) if rows else None
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="testbed", help="testbed, testbed-xl or a testbed folder")
    parser.add_argument("--variants", type=int, default=2, help="variants of each kind per caption")
    parser.add_argument(
        "--suite-seed",
        type=int,
        default=SUITE_SEED,
        help="another draw of variants (e.g. to develop on, apart from the suite)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[500, 501, 502, 503], help="noise seeds")
    parser.add_argument("--items", nargs="+", default=None, help="only these item ids (default: all)")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--steps", type=int, default=STEPS, help="denoising steps (the calibration's: 50)")
    parser.add_argument("--no-policy-run", action="store_true", help="skip the default-policy pass")
    parser.add_argument(
        "--calibration", type=Path, default=None, help="a calibration file to guard with (default: the testbed's)"
    )
    parser.add_argument("--write-suite", type=Path, default=None, help="write the suite as JSONL and stop")
    parser.add_argument("--out", type=Path, default=RESULTS / "perturbations.json")
    args = parser.parse_args()
    if args.variants < 1:
        parser.error("--variants must be >= 1")
    started = time.perf_counter()
    folder = testbed_folder(args.model)
    truth = testbed.load_truth(folder / "truth")
    captions = {**truth.memorized_prompts, **truth.mixed_prompts}
    if args.items:
        unknown = sorted(set(args.items) - set(captions))
        if unknown:
            parser.error(f"unknown item id(s) {', '.join(unknown)}; the testbed has {', '.join(sorted(captions))}")
        captions = {k: v for k, v in captions.items() if k in args.items}
    suite = build_suite(captions, args.variants, args.suite_seed)
    if args.write_suite is not None:
        args.write_suite.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"caption": v.prompt, "item": v.item, "kind": v.kind}) for v in suite]
        args.write_suite.write_text("\n".join(lines) + "\n")
        print(f"wrote {len(suite)} variants to {args.write_suite}")
        return

    pipe, truth = testbed.load(model_dir=folder)
    pipe.set_progress_bar_config(disable=True)
    if args.calibration is not None:  # another detector's calibration of these weights
        pipe.guard_config = pipe.guard_config.replace(calibration=args.calibration)
    config = pipe.guard_config
    items = {m.id: m for m in truth.memorized}
    prompts = [v.prompt for v in suite]
    rows = []
    for seed in args.seeds:
        pipe.guard_config = config.replace(policy=Policy.uniform("flag"))  # the parent's image, and the verdict
        images, reports = _generate(pipe, prompts, seed, args.batch_size, args.steps)
        returned = returned_reports = None
        if not args.no_policy_run:
            pipe.guard_config = config
            returned, returned_reports = _generate(pipe, prompts, seed, args.batch_size, args.steps)
        for j, (variant, image, report) in enumerate(zip(suite, images, reports, strict=True)):
            item = items[variant.item]
            row = {
                **asdict(variant),
                "seed": seed,
                "similarity": round(item_similarity(image, item), 4),
                "replicates_own": replicates(image, item),
                "replicates_any": bool(replicated_items(image, truth.memorized)),
                "score": round(float(report.score), 5),
                "caught": bool(report.memorized),
            }
            if returned is not None:
                row["returned_copy_any"] = bool(replicated_items(returned[j], truth.memorized))
                final = returned_reports[j]
                row["returned_outcome"] = final.outcome
                # what each re-sample applied (the guard's strategy names), so a re-sample that copies
                # again can be traced to the branch that drew it
                row["mitigations"] = [a.mitigation for a in final.attempts[1:]]
            rows.append(row)
    pipe.guard_config = config

    by_kind = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    policy_run = not args.no_policy_run
    result = {
        "script": "benchmarks/perturbations.py",
        "date": date.today().isoformat(),
        "model": model_label(args.model),
        "settings": {
            "suite_seed": args.suite_seed,
            "variants_per_kind": args.variants,
            "captions": len(captions),
            "variants": len(suite),
            "noise_seeds": args.seeds,
            "steps": args.steps,
            "guidance": GUIDANCE,
            "threshold": config.calibration.threshold if config.calibration is not None else None,
            "detector": config.effective_detector.name,
        },
        "overall": _summary(rows, policy_run),
        "by_kind": {kind: _summary(by_kind[kind], policy_run) for kind in KINDS if by_kind[kind]},
        "missed": [r for r in rows if r["replicates_own"] and not r["caught"]],
        # returned copies of images the guard judged memorized: re-samples that copy again, and copies
        # allowed as intended
        "judged_copies": [r for r in rows if r.get("returned_copy_any") and r["returned_outcome"] != "clean"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(result, args.out, echo=False)
    overall = result["overall"]
    print(
        f"{len(rows)} images; replicate their item {overall['replicate_own']:.3f}; "
        f"guard TPR on copies {overall['tpr_on_copies']}; wrote {args.out} in {result['seconds']} s"
    )
    for kind, s in result["by_kind"].items():
        returned_part = f" returned copies {s['returned_copies_any']:.3f}" if policy_run else ""
        print(f"  {kind:12s} replicate {s['replicate_own']:.3f}  TPR {s['tpr_on_copies']}{returned_part}")


if __name__ == "__main__":
    main()
