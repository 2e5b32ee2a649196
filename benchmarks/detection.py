"""Detection side by side with the published detectors, on the same model, prompts and seeds.

    python benchmarks/detection.py                      # the testbed: its memorized vs. novel prompts
    python benchmarks/detection.py --model CompVis/stable-diffusion-v1-4 \\
        --memorized ../shared/data/peers/MemAttn/sd1_mem345.txt \\
        --benign ../shared/data/peers/MemAttn/group_nomem500.txt --device cuda

Prompt files: one prompt per line, or JSONL with a `caption` field. Every method scores the same
generations: one recording pass per batch and seed reads the union of the signals all methods need
(`memguard.detection.record_trace`). n = 1 pools every (prompt, seed) generation; n = 4 averages a
prompt's scores over its 4 seeds (Wen et al.'s protocol). memguard's fitted scores (its calibrated default
"top_layer_entropy", "attention_noise", "attention_or_updates" at its own decision step, 8, and on the
testbed the standardized bottleneck entropy) are
fitted, as `memguard.calibrate` fits them, on benign prompts apart from both sets (the testbed's
calibration prompts, or the first `--fit-prompts` of memguard's benign corpus). Post hoc methods (Ren D,
Chen) need the whole run and are scored at step 50 only. Costs are timed separately, per method, on the
first batch.

Writes benchmarks/results/detection.json and docs/assets/detection_roc.png (with another --out, the figure
goes beside it: detection_xl.json, detection_roc_xl.png); prints the tables.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
import typer
from diffusers import DDIMScheduler

from memguard.detection import (
    AnisotropyDetector,
    AttentionEntropyDetector,
    AttentionNoiseDetector,
    AttentionOrUpdatesDetector,
    AttentionSpreadDetector,
    BottleneckEntropyDetector,
    BrightEndingDetector,
    HessianDetector,
    LateAttentionEntropyDetector,
    LatentUpdateDetector,
    NoiseMagnitudeDetector,
    StandardizedBottleneckEntropyDetector,
    TopLayerEntropyDetector,
    record_trace,
)
from memguard.detection.bottleneck import bottleneck_layers
from memguard.models import load_pipeline
from memguard.prompts_file import read_prompts
from memguard.signals import SignalNeeds, cross_attention_layers
from memguard.testbed.roc import auc, roc_curve, tpr_at_fpr

sys.path.insert(0, str(Path(__file__).parent))  # the shared _results module beside this script
from _results import plot_beside  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEFAULT_PLOT = RESULTS.parent.parent / "docs" / "assets" / "detection_roc.png"  # the figure the docs show
EARLY_STEPS = (1, 3, 5, 10)
TWO_STAGE = "memguard (attention at 1 or latent updates to k, calibrated)"


@dataclass(frozen=True)
class Method:
    label: str
    detector: object
    steps: tuple[int, ...]  # the decision steps it is scored at
    post_hoc: bool = False


def methods(total_steps: int) -> list[Method]:
    return [
        Method("memguard (bottleneck entropy)", BottleneckEntropyDetector(), EARLY_STEPS),
        Method("Wen et al. 2024 (noise magnitude)", NoiseMagnitudeDetector(), EARLY_STEPS),
        Method("Ren et al. 2024 E (entropy, first layer)", AttentionEntropyDetector(), (1, 3)),
        # Jeon's and Asthana's scores are defined on the starting noise x_T: step 1 only
        Method("Jeon et al. 2025 (Hessian, 1 JVP)", HessianDetector(), (1,)),
        # SD 1.4's weights (the authors' 1 and 2); one extra CFG-batch call at the first step
        Method("Asthana & Belagiannis 2026 (anisotropy)", AnisotropyDetector(), (1,)),
        Method("Huang et al. 2026 (latent update norm)", LatentUpdateDetector(), EARLY_STEPS),
        Method("Ren et al. 2024 D (late entropy)", LateAttentionEntropyDetector(), (total_steps,), post_hoc=True),
        Method("Chen et al. 2025 (bright ending)", BrightEndingDetector(), (total_steps,), post_hoc=True),
    ]


def _fit_prompts(is_testbed: bool, count: int) -> list[str]:
    """Benign prompts to fit standardized scores on: the testbed's calibration prompts (benign scenes drawn
    apart from the evaluation sets), or memguard's benign corpus for any other model."""
    if is_testbed:
        from memguard.testbed.data import calibration_prompts

        return calibration_prompts(n=count)
    from memguard import benign_prompts

    return benign_prompts()[:count]


def _fitted(pipe, detector, prompts: list[str], steps: int, guidance: float, decision_step: int = 1):
    """`detector` fitted at `decision_step` on `prompts` (one generation each, seed 7), as `memguard.calibrate`
    fits it: the statistics of the benign prompts' features."""
    features = _record(
        pipe,
        prompts,
        [7],
        detector.needs,
        decision_step,
        steps,
        guidance,
        25,
        lambda t: detector.features(t, decision_step),
    )
    return detector.fit({name: values[0] for name, values in features.items()})


def _fitted_methods(pipe, prompts: list[str], steps: int, guidance: float, is_testbed: bool) -> list[Method]:
    """memguard's calibrated default (top_layer_entropy), the opt-in attention_spread and
    attention_noise, each fitted at each early step
    it is scored at (a calibration fits the statistics at its decision step), and on the testbed the
    standardized bottleneck entropy."""

    def at_early_steps(label: str, detector) -> list[Method]:
        return [Method(label, _fitted(pipe, detector, prompts, steps, guidance, k), (k,)) for k in (1, 3)]

    spread = at_early_steps("memguard (attention spread, calibrated)", AttentionSpreadDetector())
    top_layers = at_early_steps("memguard (top layers' entropy, calibrated)", TopLayerEntropyDetector())
    combined = at_early_steps("memguard (attention + noise, calibrated)", AttentionNoiseDetector())
    two_stage = AttentionOrUpdatesDetector()  # decides at its own step (8): attention at 1, updates to 8
    step = two_stage.decision_step
    both = [Method(TWO_STAGE, _fitted(pipe, two_stage, prompts, steps, guidance, step), (step,))]
    if not is_testbed:
        return [*spread, *top_layers, *combined, *both]
    standardized = _fitted(pipe, StandardizedBottleneckEntropyDetector(), prompts, steps, guidance)
    return [
        *spread,
        *top_layers,
        *combined,
        *both,
        Method("memguard (standardized bottleneck entropy)", standardized, (1,)),
    ]


def testbed_prompts(n_benign: int, model: str | Path = "testbed") -> tuple[list[str], list[str]]:
    """A testbed model's memorized and mixed captions, and novel compositions (its own 25 plus more
    drawn the same way with another seed, so 1% FPR is more than one image). Read from that model's own
    truth: a testbed trained on an older recipe (the SDXL one) has fewer memorized items than today's."""
    from memguard import testbed
    from memguard.testbed.data import evaluation_prompts

    truth = testbed.load_truth(testbed.folder(model) / "truth")
    memorized = list(truth.memorized_prompts.values()) + list(truth.mixed_prompts.values())
    benign = list(truth.novel) + evaluation_prompts(seed=2024, n_novel=max(0, n_benign - len(truth.novel))).novel
    return memorized, benign[:n_benign]


def load_prompt_file(path: Path, limit: int | None) -> list[str]:
    prompts = [p.text for p in read_prompts(path)]
    return prompts[:limit] if limit else prompts


def _generators(seed: int, first: int, count: int) -> list[torch.Generator]:
    # generation j of the set uses seed*100003 + j: shared by every method, independent of batching
    return [torch.Generator("cpu").manual_seed(seed * 100003 + first + j) for j in range(count)]


def _record(pipe, prompts, seeds, needs, upto, steps, guidance, batch_size, score) -> dict:
    """{key: (len(seeds), len(prompts)) scores} from `score(trace)` -> {key: (batch,) tensor}."""
    columns: dict[str, list[list[torch.Tensor]]] = {}
    for s_index, seed in enumerate(seeds):
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            trace = record_trace(
                pipe,
                batch,
                needs,
                upto_step=upto,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=_generators(seed, start, len(batch)),
            )
            for key, values in score(trace).items():
                columns.setdefault(key, [[] for _ in seeds])[s_index].append(
                    (values if values.dtype == torch.float64 else values.float()).cpu()
                )
    return {key: torch.stack([torch.cat(per_seed) for per_seed in rows]) for key, rows in columns.items()}


def _figures(positive: torch.Tensor, negative: torch.Tensor) -> dict:
    """positive/negative: (seeds, prompts). n=1 pools generations; n=4 averages each prompt's seeds."""
    out = {}
    for n, (pos, neg) in {
        1: (positive.flatten(), negative.flatten()),
        positive.shape[0]: (positive.mean(dim=0), negative.mean(dim=0)),
    }.items():
        p, q = pos.tolist(), neg.tolist()
        out[f"n={n}"] = {
            "auc": auc(p, q),
            "tpr_at_1pct_fpr": tpr_at_fpr(p, q, 0.01),
            "tpr_at_3pct_fpr": tpr_at_fpr(p, q, 0.03),
            "positives": len(p),
            "negatives": len(q),
        }
    return out


class _UNetCalls:
    def __init__(self, unet):
        self.calls = 0
        self.handle = unet.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.calls += 1


def _cost(pipe, prompts, method: Method, step: int, steps: int, guidance: float) -> dict:
    """UNet forward calls per generation batch and wall seconds per prompt to reach the method's score
    (best of 2 runs on one batch)."""
    needs = method.detector.needs
    best, calls = math.inf, 0
    for _ in range(2):
        counter = _UNetCalls(pipe.unet)
        start = time.perf_counter()
        record_trace(
            pipe,
            prompts,
            needs,
            upto_step=step,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=_generators(0, 0, len(prompts)),
        )
        best = min(best, time.perf_counter() - start)
        counter.handle.remove()
        calls = counter.calls
    return {"unet_calls": calls, "seconds_per_prompt": best / len(prompts)}


def main(
    model: str = typer.Option(
        "testbed", help="testbed, testbed-xl, a retrained testbed folder, tiny, or a model id / path"
    ),
    memorized: Path = typer.Option(None, help="memorized prompts (lines or JSONL with `caption`); testbed: its own"),
    benign: Path = typer.Option(None, help="non-memorized prompts (same formats); testbed: novel compositions"),
    limit: int = typer.Option(None, help="use at most this many prompts of each file"),
    n_benign: int = typer.Option(200, help="testbed: number of novel prompts"),
    seeds: int = typer.Option(4, min=1, help="generations per prompt (n = 1 pools them, n = seeds averages)"),
    steps: int = typer.Option(50, min=10),
    guidance: float = typer.Option(7.5),
    batch_size: int = typer.Option(25, min=1),
    fit_prompts: int = typer.Option(200, min=3, help="benign prompts memguard's calibrated score is fitted on"),
    post_hoc: bool = typer.Option(True, help="also run the full-run methods (Ren D, Chen)"),
    device: str = typer.Option("cuda" if torch.cuda.is_available() else "cpu"),
    out: Path = typer.Option(RESULTS / "detection.json"),
    plot: Path | None = typer.Option(None, help="the ROC figure (default: the docs' figure, or beside --out)"),
) -> None:
    started = time.perf_counter()
    plot = plot or plot_beside(out, RESULTS / "detection.json", DEFAULT_PLOT)
    pipe, name = load_pipeline(model, device=device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the literature's protocol
    # a retrained testbed folder (python -m memguard.testbed.train --out DIR) is scored on the testbed's prompts
    is_testbed = model in ("testbed", "testbed-xl") or (Path(model) / "truth").is_dir()
    if is_testbed:  # the testbed's own sets unless a file replaces one (e.g. --memorized a perturbation suite)
        mem_prompts, ben_prompts = testbed_prompts(n_benign, model)
        if memorized is not None:
            mem_prompts = load_prompt_file(memorized, limit)
        if benign is not None:
            ben_prompts = load_prompt_file(benign, limit)
    elif memorized is None or benign is None:
        raise typer.BadParameter("pass both --memorized and --benign (or neither, on the testbed)")
    else:
        mem_prompts, ben_prompts = load_prompt_file(memorized, limit), load_prompt_file(benign, limit)
    seed_list = list(range(seeds))
    all_methods = methods(steps)
    all_methods[:0] = _fitted_methods(pipe, _fit_prompts(is_testbed, fit_prompts), steps, guidance, is_testbed)
    fitted_at_1 = {m.detector.name: m.detector for m in all_methods if m.steps == (1,)}
    top_at_1, combined_at_1 = fitted_at_1["top_layer_entropy"], fitted_at_1["attention_noise"]
    early = [m for m in all_methods if not m.post_hoc]
    late = [m for m in all_methods if m.post_hoc] if post_hoc else []
    layers = sorted(cross_attention_layers(pipe.unet))

    early_needs = SignalNeeds(attention=True, attention_by_layer=True)
    for m in early:
        early_needs = early_needs.union(m.detector.needs)

    def score_early(trace):
        scores = {}
        for m in early:
            for k in m.steps:
                scores[f"{m.label}|{k}"] = m.detector.score(trace, k)
        for layer in layers:  # the ablation: every layer alone, at step 1
            scores[f"layer:{layer}"] = AttentionEntropyDetector(layer=layer).score(trace, 1)
        scores["bottleneck:" + ",".join(bottleneck_layers(trace))] = BottleneckEntropyDetector().score(trace, 1)
        # the default with one layer (the maximum) or every layer (the mean) instead of a quarter of them
        z = top_at_1.standardized(top_at_1.features(trace, 1))
        scores["memguard default with the single most raised layer (max)"] = z.max(dim=0).values
        scores["memguard default with every layer (mean)"] = z.mean(dim=0)
        # attention_noise's parts, each alone, and max instead of sum
        attention, noise = combined_at_1.parts(combined_at_1.features(trace, 1))
        scores["memguard part: attention entropy, every layer standardized"] = attention
        scores["memguard part: log noise RMS, standardized"] = noise
        scores["memguard parts combined by max instead of sum"] = torch.maximum(attention, noise)
        return scores

    def score_late(trace):
        return {f"{m.label}|{steps}": m.detector.score(trace, steps) for m in late}

    last_early = max(k for m in early for k in m.steps)
    raw = {}
    for label, prompts in (("memorized", mem_prompts), ("benign", ben_prompts)):
        scores = _record(pipe, prompts, seed_list, early_needs, last_early, steps, guidance, batch_size, score_early)
        if late:
            late_needs = late[0].detector.needs
            for m in late[1:]:
                late_needs = late_needs.union(m.detector.needs)
            scores.update(_record(pipe, prompts, seed_list, late_needs, steps, steps, guidance, batch_size, score_late))
        raw[label] = scores

    results, ablation = [], []
    for key in raw["memorized"]:
        figures = _figures(raw["memorized"][key], raw["benign"][key])
        if "|" in key:
            label, step = key.split("|")
            results.append({"method": label, "step": int(step), **figures})
        else:
            ablation.append({"signal": key, "step": 1, **figures})
    # ablation: memguard's score with Wen's added (max of benign-standardized scores; the standardization
    # uses the benign set itself, an optimistic choice for the combination)
    standardized = []  # (memorized z, benign z) per signal
    for key in ("memguard (bottleneck entropy)|1", "Wen et al. 2024 (noise magnitude)|1"):
        memorized_scores, benign_scores = raw["memorized"][key], raw["benign"][key]
        mu, sd = benign_scores.mean(), benign_scores.std().clamp_min(1e-12)
        standardized.append(((memorized_scores - mu) / sd, (benign_scores - mu) / sd))
    (mem_a, ben_a), (mem_b, ben_b) = standardized
    combined = (torch.maximum(mem_a, mem_b), torch.maximum(ben_a, ben_b))
    ablation.append({"signal": "max(z bottleneck entropy, z noise magnitude)", "step": 1, **_figures(*combined)})

    probe = mem_prompts[: min(batch_size, len(mem_prompts))]
    costs = {}
    for m in all_methods if post_hoc else early:
        if m.label in costs:  # memguard's score fitted at another step: the cost to its first step is shown
            continue
        step = m.steps[0]
        costs[m.label] = {"step": step, **_cost(pipe, probe, m, step, steps, guidance)}

    payload = {
        "date": date.today().isoformat(),
        "model": name,
        "device": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "settings": {
            "scheduler": "DDIM",
            "steps": steps,
            "guidance": guidance,
            "seeds": seed_list,
            "memorized_prompts": len(mem_prompts),
            "benign_prompts": len(ben_prompts),
        },
        "results": results,
        "ablation": ablation,
        "costs": costs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    _print_tables(payload, seeds)
    _plot(raw, [m for m in all_methods if m.post_hoc is False or post_hoc], plot, steps)
    print(f"wrote {out} and {plot} in {payload['seconds']} s")


def _print_tables(payload: dict, seeds: int) -> None:
    print(f"\n{payload['model']} on {payload['device']}; {payload['settings']}")
    header = f"{'method':44s} {'step':>4s} " + " ".join(
        f"{'AUC n=' + str(n):>9s} {'TPR@1%':>7s} {'TPR@3%':>7s}" for n in (1, seeds)
    )
    print(header)
    for row in payload["results"]:
        figures = [row[f"n={n}"] for n in (1, seeds)]
        cells = " ".join(f"{f['auc']:9.4f} {f['tpr_at_1pct_fpr']:7.3f} {f['tpr_at_3pct_fpr']:7.3f}" for f in figures)
        print(f"{row['method']:44s} {row['step']:4d} {cells}")
    print("\nablation (step 1, n=1)")
    for row in payload["ablation"]:
        f = row["n=1"]
        print(f"{row['signal'][:80]:80s} AUC {f['auc']:.4f} TPR@1% {f['tpr_at_1pct_fpr']:.3f}")
    print("\ncost to the score (one batch)")
    for label, cost in payload["costs"].items():
        calls, seconds = cost["unet_calls"], cost["seconds_per_prompt"]
        print(f"{label:44s} step {cost['step']:3d}  UNet calls {calls:3d}  {seconds:.3f} s/prompt")


def _plot(raw: dict, shown: list[Method], path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    plotted = set()
    for m in shown:  # each method at step 1, or at the one step it decides at (post hoc: the last)
        step = steps if m.post_hoc else 1 if f"{m.label}|1" in raw["memorized"] else min(m.steps)
        key = f"{m.label}|{step}"
        if key in plotted:
            continue
        plotted.add(key)
        fpr, tpr = roc_curve(raw["memorized"][key].flatten().tolist(), raw["benign"][key].flatten().tolist())
        ax.plot(fpr, tpr, label=f"{m.label}, step {step}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false-positive rate (symlog)")
    ax.set_ylabel("true-positive rate")
    ax.set_title("Memorized vs. novel prompts, n = 1")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    typer.run(main)
