"""Latency and peak memory of guarded calls over the same unguarded calls, interleaved in one process.

    python benchmarks/overhead.py [--model testbed|tiny|PATH] [--modes flag resample-novel resample-memorized]
                                  [--detector calibrated|uncalibrated] [--repeats 15] [--steps 50]

Modes (each guarded pipeline wraps the same unguarded one, sharing its modules):
- flag: a policy that only flags (`Policy.uniform("flag")`), on novel prompts;
- resample-novel: the default policy (unintended and mixed -> re-sample), on novel prompts, which should
  not be re-sampled: the ratio should be ~1;
- resample-memorized: the default policy on the testbed's memorized (unintended) captions: the first
  generation stops at the decision step when every image of the call is to be re-sampled, then each image
  is re-run alone with the mitigation; the ratio is one early-stopped attempt plus the re-runs.

The detector is the calibrated one by default (the model's shipped calibration: the testbed's uses
"bottleneck_entropy"), or `--detector uncalibrated` ("noise_rms" with its model-free default threshold);
the JSON records which detector, threshold and decision step were measured.

Each repeat runs every mode; within a mode, the unguarded and the guarded pipeline get the same prompts
and seeds, in an order that alternates from repeat to repeat, so drift (thermal, other load) hits both
alike. Reported per mode: median and quartiles of the unguarded and guarded seconds per call, the median
(and quartiles) of the per-repeat ratios, peak memory, and the guard's actions and re-samples. Prompts
cycle through the testbed's evaluation sets, `--images-per-call` at a time. Writes
benchmarks/results/overhead.json (the top-level keys of earlier versions are the flag mode's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import diffusers
import torch

import memguard
from memguard.models import TESTBED, guard_defaults, load_pipeline
from memguard.testbed.data import evaluation_prompts
from memguard.testbed.peak_memory import PeakMemory

RESULTS = Path(__file__).parent / "results"
WARMUP_SEED = 10_000  # warm-up calls use seeds apart from the measured repeats' (0 .. repeats-1)


@dataclass(frozen=True)
class Mode:
    policy: memguard.Policy
    prompt_set: str  # "novel" or "memorized" (the testbed's evaluation sets)


MODES = {
    "flag": Mode(memguard.Policy.uniform("flag"), "novel"),
    "resample-novel": Mode(memguard.Policy(), "novel"),
    "resample-memorized": Mode(memguard.Policy(), "memorized"),
}


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads)"


def _call(pipe, prompts: list[str], steps: int, seed: int, memory: PeakMemory):
    """(seconds, peak MiB, peak increase MiB, memorization reports or None) of one call."""
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    memory.start()
    start = time.perf_counter()
    out = pipe(prompts, num_inference_steps=steps, generator=generators, output_type="np")
    if memory.cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak, delta = memory.stop()
    return seconds, peak, delta, getattr(out, "memorization", None)


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def _spread(values: list[float]) -> dict:
    # "inclusive" quartiles stay within the data, also for the 2-3 repeats of a smoke run.
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "quartiles": [q[0], q[1], q[2]]}


def _prompts_for(pool: list[str], repeat: int, n: int) -> list[str]:
    """The repeat's n prompts, cycling through the pool (the same for its guarded and unguarded call)."""
    return [pool[(repeat * n + i) % len(pool)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=TESTBED, help="testbed, tiny, or a diffusers model id / local path")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--detector",
        choices=("calibrated", "uncalibrated"),
        default="calibrated",
        help="calibrated: the model's calibration (the testbed ships one; else --calibration); "
        "uncalibrated: noise_rms with its default threshold",
    )
    parser.add_argument("--calibration", type=Path, help="a calibration JSON (default: the one the model ships)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--images-per-call", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "overhead.json")
    args = parser.parse_args()
    if args.repeats < 2 or args.steps < 1 or args.images_per_call < 1:
        parser.error("--repeats must be >= 2, --steps and --images-per-call >= 1")
    started = time.perf_counter()

    defaults = guard_defaults(args.model)
    calibration = None
    if args.detector == "calibrated":
        calibration = args.calibration or defaults.calibration
        if calibration is None:
            parser.error(f"--detector calibrated: model {args.model!r} ships no calibration; pass --calibration PATH")
    pipe, name = load_pipeline(args.model, device=args.device)
    ev = evaluation_prompts()
    pools = {"novel": list(ev.novel), "memorized": list(ev.memorized.values())}
    memory = PeakMemory(args.device)
    guarded = {}
    for mode in args.modes:
        config = memguard.GuardConfig(calibration=calibration, registry=defaults.registry, policy=MODES[mode].policy)
        guarded[mode] = memguard.guard(pipe, config)
        guarded[mode].set_progress_bar_config(disable=True)
    for mode in args.modes:  # warm-up: allocator, kernels, first-call lazy init, the re-sample path
        prompts = _prompts_for(pools[MODES[mode].prompt_set], 0, args.images_per_call)
        _call(pipe, prompts, args.steps, WARMUP_SEED, memory)
        first = _call(guarded[mode], prompts, args.steps, WARMUP_SEED, memory)[3][0]
    detector = {
        "requested": args.detector,
        "name": first.detector,
        "threshold": first.threshold,
        "threshold_source": first.threshold_source,
        "decision_step": first.decided_at_step,
        "calibration": _relative(calibration) if calibration else None,
    }

    rows = {mode: [] for mode in args.modes}
    for r in range(args.repeats):
        for mode in args.modes:
            prompts = _prompts_for(pools[MODES[mode].prompt_set], r, args.images_per_call)
            order = [("unguarded", pipe), ("guarded", guarded[mode])]
            if r % 2:
                order.reverse()
            row = {"repeat": r}
            for label, p in order:
                seconds, peak, delta, reports = _call(p, prompts, args.steps, r, memory)
                row[label] = dict(seconds=seconds, peak_mib=peak, delta_mib=delta)
                if reports is not None:
                    row["reports"] = reports
            rows[mode].append(row)
        print(f"repeat {r + 1}/{args.repeats} done ({time.perf_counter() - started:.0f} s)", flush=True)

    modes = {mode: _summarize(mode, rows[mode], args.steps, memory) for mode in args.modes}
    result = {
        "model": name,
        "device": _device_name(args.device),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "steps": args.steps,
        "images_per_call": args.images_per_call,
        "repeats": args.repeats,
        "detector": detector,
        "memory_method": memory.method,
    }
    if "flag" in modes:  # the keys of the flag-only version of this script
        flag = modes["flag"]
        result.update(
            unguarded_median_s=flag["unguarded_s"]["median"],
            guarded_flag_median_s=flag["guarded_s"]["median"],
            median_ratio=flag["ratio"]["median"],
            ratio_quartiles=flag["ratio"]["quartiles"],
        )
        if memory.cuda:
            result["peak_memory_mib"] = flag["peak_memory_mib"]["guarded"]
    result["modes"] = modes
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    print(f"\nwrote {args.out} in {result['seconds']} s")


def _summarize(mode: str, rows: list[dict], steps: int, memory: PeakMemory) -> dict:
    unguarded = [row["unguarded"]["seconds"] for row in rows]
    guarded = [row["guarded"]["seconds"] for row in rows]
    reports = [report for row in rows for report in row["reports"]]
    actions = dict(Counter(report.action for report in reports))
    resamples = [report.resamples for report in reports]
    summary = {
        "policy": str(MODES[mode].policy),
        "prompts": f"testbed evaluation set: {MODES[mode].prompt_set}",
        "images": len(reports),
        "unguarded_s": _spread(unguarded),
        "guarded_s": _spread(guarded),
        "ratio": _spread([g / u for g, u in zip(guarded, unguarded, strict=True)]),
        "peak_memory_mib": {label: max(row[label]["peak_mib"] for row in rows) for label in ("unguarded", "guarded")},
        "actions": actions,
        "resamples_per_image": statistics.fmean(resamples),
        # the first generation's verdict (a re-sampled image's report carries the last attempt's)
        "detected_share": statistics.fmean(
            report.attempts[0].memorized if report.attempts else report.memorized for report in reports
        ),
    }
    if memory.per_call:  # the most any call of the mode added to what was in use before it
        summary["peak_memory_increase_mib"] = {
            label: max(row[label]["delta_mib"] for row in rows) for label in ("unguarded", "guarded")
        }
    if MODES[mode].policy.resamples:
        # Where the guarded time goes. `guard_seconds` (shared by a call's images) is the guard's own time:
        # its taps and decisions plus every re-sample; the rest is the caller's first generation, which stops
        # at the decision step when every image of the call is to be re-sampled.
        guard_s = [row["reports"][0].guard_seconds for row in rows]
        first_s = [g - s for g, s in zip(guarded, guard_s, strict=True)]
        attempts = [a for report in reports for a in report.attempts[1:]]
        summary["decomposition"] = {
            "first_generation_s": _spread(first_s),
            "guard_s": _spread(guard_s),
            "first_generation_over_unguarded": statistics.median(
                f / u for f, u in zip(first_s, unguarded, strict=True)
            ),
            "guard_over_unguarded": statistics.median(g / u for g, u in zip(guard_s, unguarded, strict=True)),
            "first_generation_stopped_early_share": statistics.fmean(
                bool(report.attempts) and report.attempts[0].stopped_at_step is not None for report in reports
            ),
            "resample_attempts": len(attempts),
            "resample_attempts_stopped_early": sum(a.stopped_at_step is not None for a in attempts),
            "steps": steps,
        }
    return summary


def _print_table(result: dict) -> None:
    d = result["detector"]
    print(
        f"\nmodel: {result['model']} | device: {result['device']} | torch {result['torch']}, "
        f"diffusers {result['diffusers']} | {result['steps']} steps, {result['images_per_call']} images/call, "
        f"{result['repeats']} repeats"
    )
    print(
        f"detector: {d['requested']} -> {d['name']} (threshold {d['threshold']:.4g}, {d['threshold_source']}, "
        f"decision step {d['decision_step']})"
    )
    print(f"memory: {result['memory_method']}")
    header = (
        f"{'mode':<20} {'unguarded ms':>13} {'guarded ms':>11} {'median ratio':>12} {'ratio q1..q3':>13} "
        f"{'resamples/img':>13} {'peak MiB u/g':>15}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for mode, s in result["modes"].items():
        q = s["ratio"]["quartiles"]
        peak = s.get("peak_memory_increase_mib", s["peak_memory_mib"])
        print(
            f"{mode:<20} {s['unguarded_s']['median'] * 1000:13.1f} {s['guarded_s']['median'] * 1000:11.1f} "
            f"{s['ratio']['median']:12.3f} {q[0]:6.3f}..{q[2]:5.3f} {s['resamples_per_image']:13.2f} "
            f"{peak['unguarded']:7.1f}/{peak['guarded']:<7.1f}"
        )
    if "peak_memory_increase_mib" in next(iter(result["modes"].values())):
        print("(peak MiB: the most one call added to the memory in use before it)")
    for mode, s in result["modes"].items():
        if "decomposition" in s:
            c = s["decomposition"]
            print(
                f"{mode}: actions {s['actions']}, detected {s['detected_share']:.0%}; "
                f"first generation {c['first_generation_over_unguarded']:.3f} x "
                f"unguarded (stopped early for {c['first_generation_stopped_early_share']:.0%} of images), "
                f"guard + re-samples {c['guard_over_unguarded']:.3f} x; {c['resample_attempts']} re-sample attempts, "
                f"{c['resample_attempts_stopped_early']} stopped early"
            )


if __name__ == "__main__":
    main()
