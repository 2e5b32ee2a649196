"""Index build and query throughput of each copy-verification encoder (memguard.verify), on this machine.

    python benchmarks/encoders.py [--count 64] [--queries 32] [--repeats 3] [--device cpu]

Models have the published architectures with random weights (speed does not depend on the values;
nothing is downloaded):
- dinov2-small / dinov2-base: facebook/dinov2-{small,base} configs (ViT-S/14, ViT-B/14), their
  processor (shorter side 256, centre crop 224, ImageNet mean/std), CLS token.
- clip-vit-b-32: openai/clip-vit-base-patch32's vision tower and projection (512 dims), its
  processor (shorter side 224, centre crop 224).
- sscd-resnet50 (TorchScript): SSCD's architecture (ResNet-50 trunk, GeM pooling, 512-dim linear
  projection), traced and saved as TorchScript, read back by `TorchScriptEncoder` at 320x320.
- pixel-32: the offline testbed encoder, for scale.

Images: `count` protected and `queries` query PNG files of `image_size` pixels (512: Stable Diffusion
1.x output), smooth random colour fields. Build = `VerificationIndex.build` over the files (PNG decode,
preprocessing, model, faiss add into a flat index); query = `index.search` of the query files (k=5).
Throughput is images / seconds, best of `repeats` runs; the 1-minute load average after each encoder's
runs is recorded, since other processes on a shared machine slow every rate. Model load time is
reported apart. Writes benchmarks/results/encoders.json.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image

from memguard.verify import VerificationIndex, encoder_from_name

RESULTS = Path(__file__).parent / "results"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Published config values (the hub's config.json of each model), so compute matches the real models.
DINOV2 = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
CLIP_B32 = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=32,
    projection_dim=512,
    hidden_act="quick_gelu",
)
# Tiny stand-ins with the same code paths, for the test of this script.
TINY_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def save_dinov2(folder: Path, size: str, tiny: bool) -> str:
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    config = Dinov2Config(**(TINY_VIT if tiny else DINOV2[size]), patch_size=14, image_size=518)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessorPil(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(folder)
    return f"dinov2:{folder}"


def save_clip(folder: Path, tiny: bool) -> str:
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    values = {**CLIP_B32, **TINY_VIT} if tiny else CLIP_B32
    CLIPVisionModelWithProjection(CLIPVisionConfig(**values)).save_pretrained(folder)
    CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, image_mean=CLIP_MEAN, image_std=CLIP_STD
    ).save_pretrained(folder)
    return f"clip:{folder}"


class SscdLike(torch.nn.Module):
    """SSCD's disc models: a ResNet-50 trunk, GeM pooling (p=3), a linear projection to 512 dims."""

    def __init__(self, tiny: bool):
        super().__init__()
        from transformers import ResNetConfig, ResNetModel

        config = (
            ResNetConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], embedding_size=8)
            if tiny
            else ResNetConfig()
        )
        self.trunk = ResNetModel(config)
        self.project = torch.nn.Linear(config.hidden_sizes[-1], 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x, return_dict=False)[0]  # (N, 2048, H/32, W/32)
        pooled = features.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        return self.project(pooled)


def save_sscd_like(file: Path, tiny: bool) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
        traced = torch.jit.trace(SscdLike(tiny).eval(), torch.zeros(1, 3, 320, 320))
    traced.save(str(file))
    return f"torchscript:{file}"


def write_images(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """Smooth random colour fields (upsampled noise), as PNG: decode costs like real pictures, not like noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        path = folder / f"{i:05d}.png"
        coarse.resize((size, size), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def parameter_count(encoder) -> int | None:
    module = getattr(encoder, "model", None) or getattr(encoder, "module", None)
    return None if module is None else sum(p.numel() for p in module.parameters())


def measure(spec: str, protected: list[Path], queries: list[Path], repeats: int, device: str, batch_size: int) -> dict:
    start = time.perf_counter()
    encoder = encoder_from_name(spec, device=device, batch_size=batch_size)
    load_s = time.perf_counter() - start
    ids = [p.name for p in protected]
    build_s, query_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        index = VerificationIndex.build(protected, ids, encoder, kind="flat", batch_size=batch_size)
        build_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        index.search(queries, k=5)
        query_s.append(time.perf_counter() - start)
    params = parameter_count(encoder)
    return dict(
        load_average_1min=round(os.getloadavg()[0], 2),  # other processes on the machine slow every rate
        dims=encoder.dim,
        params_m=None if params is None else round(params / 1e6, 1),
        load_s=round(load_s, 2),
        build_images_per_s=round(len(protected) / min(build_s), 1),
        query_images_per_s=round(len(queries) / min(query_s), 1),
        build_s=[round(s, 2) for s in build_s],
        query_s=[round(s, 2) for s in query_s],
    )


def main(
    count: int = typer.Option(64, min=1, help="protected images in the index"),
    queries: int = typer.Option(32, min=1, help="query images"),
    image_size: int = typer.Option(512, min=16, help="side of the square PNG files"),
    repeats: int = typer.Option(3, min=1, help="runs per encoder; the best is reported"),
    device: str = typer.Option("cpu", help="torch device of the encoders"),
    batch_size: int = typer.Option(32, min=1, help="images per encoder batch"),
    tiny: bool = typer.Option(False, help="tiny stand-in models (a smoke test of this script)"),
    out: Path = typer.Option(RESULTS / "encoders.json"),
) -> dict:
    rows = {}
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        protected = write_images(root / "protected", count, image_size, seed=0)
        query_files = write_images(root / "queries", queries, image_size, seed=1)
        specs = {
            "pixel-32": "pixel-32",
            "dinov2-small": save_dinov2(root / "dinov2-small", "small", tiny),
            "dinov2-base": save_dinov2(root / "dinov2-base", "base", tiny),
            "clip-vit-b-32": save_clip(root / "clip-vit-b-32", tiny),
            "sscd-resnet50": save_sscd_like(root / "sscd.pt", tiny),
        }
        for name, spec in specs.items():
            rows[name] = measure(spec, protected, query_files, repeats, device, batch_size)
            print(f"{name:14} {rows[name]}")
    result = dict(
        date=str(date.today()),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        device=device,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        load_average_1min_at_start=round(load_at_start, 2),
        weights="random (published architectures)" if not tiny else "tiny random stand-ins",
        images=dict(protected=count, queries=queries, size=image_size, format="png"),
        repeats=repeats,
        batch_size=batch_size,
        encoders=rows,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    typer.run(main)
