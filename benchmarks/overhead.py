"""Latency of a guarded call (flag mode) over the same unguarded call, interleaved in one process.

    python benchmarks/overhead.py [--model testbed|tiny|PATH] [--repeats 15] [--steps 50]

Each repeat runs the unguarded and the guarded pipeline on the same prompts and seeds, in
alternating order, so drift (thermal, other load) hits both alike; the figure is the median of the
per-repeat ratios. Peak memory is reported on CUDA. Writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import typer

import memguard
from memguard.models import load_pipeline

PROMPTS = ["a small red circle at the top left on a blue background", "a large green square in the middle"]
RESULTS = Path(__file__).parent / "results"


def _timed(pipe, steps: int, seed: int) -> float:
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(PROMPTS))]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe(PROMPTS, num_inference_steps=steps, generator=generators, output_type="np")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(
    model: str = typer.Option("testbed", help="testbed, tiny, or a diffusers model id / local path"),
    repeats: int = typer.Option(15, min=3),
    steps: int = typer.Option(50, min=1),
    device: str = typer.Option("cuda" if torch.cuda.is_available() else "cpu"),
    out: Path = typer.Option(RESULTS / "overhead.json"),
) -> None:
    pipe, name = load_pipeline(model, device=device)
    guarded = memguard.guard(pipe, memguard.GuardConfig(policy=memguard.Policy.uniform("flag")))
    guarded.set_progress_bar_config(disable=True)
    for p in (pipe, guarded):  # warm-up: allocator, kernels, first-call lazy init
        _timed(p, steps, seed=0)
    plain_s, guarded_s, ratios = [], [], []
    for r in range(repeats):
        order = [(pipe, plain_s), (guarded, guarded_s)]
        if r % 2:
            order.reverse()
        times = {}
        for p, bucket in order:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            times[id(p)] = _timed(p, steps, seed=r)
            bucket.append(times[id(p)])
        ratios.append(times[id(guarded)] / times[id(pipe)])
    result = {
        "model": name,
        "device": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "date": date.today().isoformat(),
        "steps": steps,
        "images_per_call": len(PROMPTS),
        "repeats": repeats,
        "unguarded_median_s": statistics.median(plain_s),
        "guarded_flag_median_s": statistics.median(guarded_s),
        "median_ratio": statistics.median(ratios),
        "ratio_quartiles": statistics.quantiles(ratios, n=4),
    }
    if device.startswith("cuda"):
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"model: {name} | device: {result['device']} | {steps} steps, {len(PROMPTS)} images/call, {repeats} repeats")
    print(f"{'unguarded median':>22}: {result['unguarded_median_s'] * 1000:8.1f} ms")
    print(f"{'guarded (flag) median':>22}: {result['guarded_flag_median_s'] * 1000:8.1f} ms")
    q = result["ratio_quartiles"]
    print(f"{'median ratio':>22}: {result['median_ratio']:.3f}  (quartiles {q[0]:.3f} .. {q[2]:.3f})")


if __name__ == "__main__":
    typer.run(main)
