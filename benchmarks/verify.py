"""Build throughput of the copy-verification index (memguard.verify), per index kind.

    python benchmarks/verify.py [--count 100000] [--queries 500]

The protected set is the testbed's training images, shifted, flipped and noised into `count` distinct
32x32 images, encoded with the offline pixel encoder (3,072 dims). Build time counts encoding, IVF
training and adding; images/s is count / build time. Search: seconds per query (k=5, batched) and
recall@1 of the exact image among the protected set. Also: reading and encoding PNG files, the
path `memguard index build` takes. Writes benchmarks/results/verify.json.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import faiss
import numpy as np
import typer
from PIL import Image

from memguard import testbed
from memguard.verify import IndexParams, PixelEncoder, VerificationIndex

RESULTS = Path(__file__).parent / "results"


def protected_images(count: int, seed: int = 0) -> np.ndarray:
    """`count` distinct 32x32 images derived from the testbed's training images."""
    rng = np.random.default_rng(seed)
    files = sorted((testbed.MODEL_DIR / "truth").glob("[mrt]*_[0-9].png"))  # training images, not sprites
    base = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    picks = base[rng.integers(0, len(base), count)]
    shifts = rng.integers(-6, 7, (count, 2))
    out = np.empty_like(picks)
    for i, (image, (dy, dx)) in enumerate(zip(picks, shifts, strict=True)):
        image = np.roll(image, (dy, dx), axis=(0, 1))
        out[i] = image[:, ::-1] if rng.random() < 0.5 else image
    noise = rng.integers(-12, 13, out.shape)
    return np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def png_encode_rate(images: np.ndarray, encoder: PixelEncoder) -> float:
    """Images/s read from PNG files and encoded (decode + resize + embed)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{i}.png" for i in range(len(images))]
        for path, image in zip(paths, images, strict=True):
            Image.fromarray(image).save(path)
        start = time.perf_counter()
        encoder.encode(paths)
        return len(paths) / (time.perf_counter() - start)


def main(
    count: int = typer.Option(100000, min=100, help="protected images in the index"),
    queries: int = typer.Option(500, min=10, help="search queries (exact copies of protected images)"),
    out: Path = typer.Option(RESULTS / "verify.json"),
) -> None:
    images = protected_images(count)
    ids = [str(i) for i in range(count)]
    encoder = PixelEncoder()
    rng = np.random.default_rng(1)
    query_ids = rng.choice(count, queries, replace=False)
    rows = []
    for kind in ("flat", "ivf", "hnsw"):
        start = time.perf_counter()
        index = VerificationIndex.build(images, ids, encoder, kind=kind, params=IndexParams())
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        results = index.search(images[query_ids], k=5)
        search_s = time.perf_counter() - start
        recall = float(np.mean([m[0].id == str(q) for m, q in zip(results, query_ids, strict=True)]))
        with tempfile.TemporaryDirectory() as folder:
            index.save(Path(folder) / "i.faiss")
            size = os.path.getsize(Path(folder) / "i.faiss")
        rows.append(
            dict(
                kind=kind,
                count=count,
                dims=encoder.dim,
                build_s=round(build_s, 2),
                build_images_per_s=round(count / build_s),
                search_ms_per_query=round(1000 * search_s / queries, 3),
                recall_at_1=recall,
                index_mb=round(size / 2**20, 1),
                params={"nlist": getattr(index.index, "nlist", None), "nprobe": 16, "hnsw_m": 32}
                if kind != "flat"
                else {},
            )
        )
    png_rate = png_encode_rate(images[:2000], encoder)
    print(f"{'kind':6} {'count':>7} {'build s':>8} {'images/s':>9} {'ms/query':>9} {'recall@1':>9} {'MB':>7}")
    for r in rows:
        print(
            f"{r['kind']:6} {r['count']:>7} {r['build_s']:>8} {r['build_images_per_s']:>9} "
            f"{r['search_ms_per_query']:>9} {r['recall_at_1']:>9.3f} {r['index_mb']:>7}"
        )
    print(f"PNG files read + encoded: {png_rate:.0f} images/s")
    payload = dict(
        date=str(date.today()),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        faiss=faiss.__version__,
        faiss_threads=faiss.omp_get_max_threads(),
        encoder=encoder.name,
        png_encode_images_per_s=round(png_rate),
        kinds=rows,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    typer.run(main)
