"""The guard's cost at full model size: SD 1.5 and SDXL built from their published configs with random
weights (nothing is downloaded), guarded vs unguarded, in one process.

    python benchmarks/full_size.py [--models sd15 sdxl] [--steps 50] [--repeats 3] [--compile both|off|on]
                                   [--dtype float16] [--out benchmarks/results/full_size_gpu.json]
    python benchmarks/full_size.py --smoke        # CPU, reduced sizes, 2 steps: does it run (CI)

Per model (SD 1.5 at 512 px, SDXL at 1024 px), eager (SDPA attention) and with `torch.compile` on the
UNet, it times the unguarded pipeline and the same pipeline under `memguard.guard` in these modes:
- flag: `Policy.uniform("flag")`, a threshold nothing reaches (clean traffic);
- resample: the default policy (re-sample unintended and mixed), a threshold nothing reaches: the
  cost of the guard on prompts it does not act on;
- flag-noise-only: flag mode with `record_attention=False` and the noise detector, the configuration
  that reads nothing inside a compiled graph (timed with compile only).
Calls are interleaved (unguarded, then each mode, in an order that rotates every repeat), each with
the same prompt and seed; reported are median seconds per call, the median of per-repeat ratios, and
each mode's peak GPU memory over the unguarded call's. Random weights give meaningless images: the
scores are not judged, only the guard's cost. Writes the JSON given with --out.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from prometheus_client import CollectorRegistry
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

import memguard
from memguard.metrics import GuardMetrics
from memguard.testbed.tokenizer import load_clip_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_json  # noqa: E402

PROMPT = "a photograph of a lighthouse on a rocky coast at sunset, detailed, 35mm"

# Published configs: stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 (unet/, vae/, text_encoder*/).
SD15 = dict(
    unet=dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    ),
    text_encoders=[dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)],
    vae_scaling=0.18215,
    size=512,
)
SDXL = dict(
    unet=dict(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ),
    text_encoders=[
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            projection_dim=1280,
            hidden_act="gelu",
        ),
    ],
    vae_scaling=0.13025,
    size=1024,
)
MODELS = {"sd15": SD15, "sdxl": SDXL}


def smoke_size(spec: dict) -> dict:
    """The same architecture at toy width and resolution (CPU smoke run)."""
    unet = dict(spec["unet"])
    levels = len(unet["block_out_channels"])
    unet.update(
        block_out_channels=(16, 32, 32, 32)[:levels],
        layers_per_block=1,
        sample_size=8,
        norm_num_groups=8,
        attention_head_dim=4 if isinstance(unet["attention_head_dim"], int) else (2, 4, 4)[:levels],
    )
    encoders = [
        dict(e, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        | ({"projection_dim": 32} if "projection_dim" in e else {})
        for e in spec["text_encoders"]
    ]
    unet["cross_attention_dim"] = sum(e["hidden_size"] for e in encoders)
    if "projection_class_embeddings_input_dim" in unet:
        unet.update(addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32)
    if "transformer_layers_per_block" in unet:
        unet["transformer_layers_per_block"] = 1
    return dict(spec, unet=unet, text_encoders=encoders, size=64, vae_channels=(16, 32, 32, 32))


def build(spec: dict, device: str, dtype: torch.dtype):
    """A pipeline of the spec's family with random weights, built on `device` (no host round trip)."""
    with torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**spec["unet"])
        vae = AutoencoderKL(
            block_out_channels=spec.get("vae_channels", (128, 256, 512, 512)),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2 if "vae_channels" not in spec else 1,
            latent_channels=4,
            norm_num_groups=32 if "vae_channels" not in spec else 8,
            sample_size=spec["size"],
            scaling_factor=spec["vae_scaling"],
            force_upcast=False,
        )
        encoders = []
        for k, config in enumerate(spec["text_encoders"]):
            text_config = CLIPTextConfig(
                vocab_size=49408,
                max_position_embeddings=77,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
                **config,
            )
            encoders.append((CLIPTextModelWithProjection if k == 1 else CLIPTextModel)(text_config))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    tokenizer = load_clip_tokenizer()
    modules = [m.to(dtype).eval() for m in (unet, vae, *encoders)]
    if len(encoders) == 1:
        pipe = diffusers.StableDiffusionPipeline(
            vae=modules[1],
            text_encoder=modules[2],
            tokenizer=tokenizer,
            unet=modules[0],
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=modules[1],
            text_encoder=modules[2],
            text_encoder_2=modules[3],
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=modules[0],
            scheduler=scheduler,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def guard_configs(compiled: bool) -> dict[str, memguard.GuardConfig]:
    metrics = GuardMetrics(CollectorRegistry())  # not the process's default registry
    never = 1e9  # a threshold no score reaches: the guard watches, decides, and does not act
    configs = {
        "flag": memguard.GuardConfig(policy=memguard.Policy.uniform("flag"), threshold=never, metrics=metrics),
        "resample": memguard.GuardConfig(threshold=never, metrics=metrics),
    }
    if compiled:
        configs["flag-noise-only"] = memguard.GuardConfig(
            policy=memguard.Policy.uniform("flag"),
            threshold=never,
            detector="noise_rms",
            record_attention=False,
            metrics=metrics,
        )
    return configs


class Timer:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self, pipe, steps: int, seed: int) -> tuple[float, float | None, object]:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe(
            PROMPT,
            num_inference_steps=steps,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pil",
        )
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        return seconds, peak, out


def measure(name: str, spec: dict, compiled: bool, args, device: str, dtype: torch.dtype) -> dict:
    started = time.perf_counter()
    pipe = build(spec, device, dtype)
    if compiled:
        pipe.unet = torch.compile(pipe.unet)
    guarded = {mode: memguard.guard(pipe, config) for mode, config in guard_configs(compiled).items()}
    pipes = {"unguarded": pipe, **guarded}
    timer = Timer(device)
    build_seconds = time.perf_counter() - started
    for p in pipes.values():  # warm-up (and compilation), apart from the measured seeds
        timer(p, args.steps, 10_000)
    warm_seconds = time.perf_counter() - started - build_seconds
    seconds = {label: [] for label in pipes}
    peaks = {label: [] for label in pipes}
    guard_seconds = {label: [] for label in guarded}
    statuses = {label: set() for label in guarded}
    order = list(pipes)
    for repeat in range(args.repeats):
        rotated = order[repeat % len(order) :] + order[: repeat % len(order)]
        for label in rotated:
            s, peak, out = timer(pipes[label], args.steps, repeat)
            seconds[label].append(s)
            peaks[label].append(peak)
            if label in guarded:
                report = out.memorization[0]
                guard_seconds[label].append(report.guard_seconds)
                statuses[label].add(f"{report.status}/{report.action}")
    base = seconds["unguarded"]
    result = {
        "model": name,
        "compiled": compiled,
        "size_px": spec["size"],
        "unet_parameters_m": round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1),
        "build_seconds": round(build_seconds, 1),
        "warmup_seconds": round(warm_seconds, 1),
        "unguarded_seconds": round(statistics.median(base), 4),
        "unguarded_peak_mib": _median(peaks["unguarded"]),
        "modes": {},
    }
    for label in guarded:
        ratios = [g / u for g, u in zip(seconds[label], base, strict=True)]
        peak = _median(peaks[label])
        result["modes"][label] = {
            "seconds": round(statistics.median(seconds[label]), 4),
            "ratio": round(statistics.median(ratios), 4),
            "ratios": [round(r, 4) for r in ratios],
            "guard_seconds": round(statistics.median(guard_seconds[label]), 4),
            "peak_mib": peak,
            "peak_ratio": None if peak is None else round(peak / result["unguarded_peak_mib"], 4),
            "reports": sorted(statuses[label]),
        }
    print(result, flush=True)
    del pipes, guarded, pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["sd15", "sdxl"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", choices=("both", "off", "on"), help="default: both; off with --smoke")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--smoke", action="store_true", help="CPU, reduced sizes, 2 steps, no compile")
    parser.add_argument(
        "--budget-seconds", type=float, default=None, help="start no further configuration after this long"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "full_size_gpu.json")
    args = parser.parse_args()
    if args.smoke:
        device, dtype = "cpu", torch.float32
        args.steps, args.repeats, args.compile = 2, 1, args.compile or "off"
        specs = {name: smoke_size(MODELS[name]) for name in args.models}
    else:
        if not torch.cuda.is_available():
            raise SystemExit("full_size.py measures a CUDA GPU; use --smoke for the CPU run")
        device, dtype = "cuda", getattr(torch, args.dtype)
        specs = {name: MODELS[name] for name in args.models}
    compile_modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile or "both"]
    # eager runs of every model first, then compiled ones: what matters most is measured first
    plan = [(name, compiled) for compiled in compile_modes for name in specs]
    report = {
        "script": "benchmarks/full_size.py",
        "date": date.today().isoformat(),
        "machine": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()})",
        "smoke": args.smoke,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "repeats": args.repeats,
        "attention": "SDPA (diffusers' AttnProcessor2_0)",
        "results": [],
        "skipped": [],
    }
    started = time.perf_counter()
    for name, compiled in plan:
        if args.budget_seconds is not None and time.perf_counter() - started > args.budget_seconds:
            report["skipped"].append({"model": name, "compiled": compiled, "why": "time budget"})
        else:
            report["results"].append(measure(name, specs[name], compiled, args, device, dtype))
        write_json(report, args.out, echo=False)  # after each configuration: a partial run keeps its figures


if __name__ == "__main__":
    main()
