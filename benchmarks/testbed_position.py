"""Does the testbed place things where the prompt says? The diagnosis behind the testbed's position check.

Three measurements, with the plain diffusers pipeline, DDIM 25 steps, guidance 7.5:
- plain shapes: a large yellow square on blue and a large red square on white at each of the 9 named
  places, 2 seeds (36 images); a hit is the shape's centre nearest the named place;
- concepts: every concept on its first held-out background at each place, 2 seeds (72 images);
- leak: a training square (yellow on blue) at each of the 8 outer places, noised to the first DDIM
  step, sampled with a prompt naming the opposite place, 2 seeds (16 images). Where it lands says
  whether the layout came from what is left of the image in x_T ("leak") or from the prompt;
- sensitivity: how much the text encoder's output (at the words that differ) and the UNet's output at
  the first step (same noise) change between "top left" and "bottom right", against "yellow" vs "red".

    python benchmarks/testbed_position.py [--model DIR] [--out benchmarks/results/testbed_position.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from memguard.testbed import MODEL_DIR, load_truth
from memguard.testbed.concepts import CONCEPTS, ConceptScene
from memguard.testbed.scenes import PALETTE, POSITIONS, Scene, where
from memguard.testbed.similarity import CONCEPT_THRESHOLD, concept_match, nearest_position

STEPS, GUIDANCE, SEEDS = 25, 7.5, (0, 100)
PLACES = list(POSITIONS)
OPPOSITE = {p: PLACES[len(PLACES) - 1 - i] for i, p in enumerate(PLACES)}  # the grid mirrored through its centre


def _uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def generate(pipe, prompts: list[str], seed: int, latents: torch.Tensor | None = None) -> np.ndarray:
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(
        prompts,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=generators,
        latents=latents,
        output_type="np",
    )
    return _uint8(out.images)


def shape_place(image: np.ndarray, colour: str) -> str | None:
    """The named place nearest the centre of the pixels of `colour`, or None if there are none."""
    mask = np.abs(image.astype(int) - np.array(PALETTE[colour])).sum(-1) < 90
    if not mask.any():
        return None
    y, x = np.nonzero(mask)
    return nearest_position((x.mean() + 0.5, y.mean() + 0.5))


def plain_shapes(pipe) -> float:
    hits = []
    for colour, background in (("yellow", "blue"), ("red", "white")):
        prompts = [f"a large {colour} square {where(p)} on a {background} background" for p in PLACES]
        for seed in SEEDS:
            hits += [shape_place(im, colour) == p for p, im in zip(PLACES, generate(pipe, prompts, seed), strict=True)]
    return float(np.mean(hits))


def concepts(pipe, truth) -> dict:
    placed, shown = [], []
    for spec in CONCEPTS:
        prompts = [ConceptScene(spec, spec.held_out_backgrounds[0], p).caption(0, 0) for p in PLACES]
        for seed in SEEDS:
            for p, image in zip(PLACES, generate(pipe, prompts, seed), strict=True):
                score, centre = concept_match(image, truth.concept(spec.name))
                placed.append(nearest_position(centre) == p)
                shown.append(score >= CONCEPT_THRESHOLD)
    return dict(at_requested_place=float(np.mean(placed)), shown=float(np.mean(shown)), images=len(placed))


@torch.no_grad()
def leak(pipe) -> dict:
    pipe.scheduler.set_timesteps(STEPS)
    first = pipe.scheduler.timesteps[0]
    kept = pipe.scheduler.alphas_cumprod[first].sqrt()  # share of the image left in x_t at the first step
    outer = [p for p in PLACES if p != "center"]
    squares = np.stack([Scene("square", "yellow", "large", "blue", (p,)).render() for p in outer])
    pixels = torch.from_numpy(squares).permute(0, 3, 1, 2).float() / 127.5 - 1
    x0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    prompts = [f"a large yellow square {where(OPPOSITE[p])} on a blue background" for p in outer]
    landed = Counter()
    for seed in SEEDS:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        latents = kept * x0 + (1 - kept**2).sqrt() * noise
        for p, image in zip(outer, generate(pipe, prompts, seed, latents=latents), strict=True):
            place = shape_place(image, "yellow")
            landed[
                "none" if place is None else "leak" if place == p else "prompt" if place == OPPOSITE[p] else "other"
            ] += 1
    return dict(first_timestep=int(first), image_share_in_x_t=round(float(kept), 4), landed=dict(landed))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@torch.no_grad()
def sensitivity(pipe) -> dict:
    base = "a large yellow square at the top left on a blue background"
    variants = {"position": base.replace("top left", "bottom right"), "colour": base.replace("yellow", "red")}
    prompts = [base, *variants.values()]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    states = pipe.text_encoder(ids.input_ids)[0]
    pipe.scheduler.set_timesteps(STEPS)
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(5)).repeat(len(prompts), 1, 1, 1)
    out = pipe.unet(noise, pipe.scheduler.timesteps[0], states).sample
    result = {}
    for k, name in enumerate(variants, start=1):
        differing = (ids.input_ids[0] != ids.input_ids[k]).nonzero().flatten()
        per_token = [_relative(states[0, i], states[k, i]) for i in differing]
        result[name] = dict(
            text_encoder_at_differing_words=[round(v, 3) for v in per_token],
            unet_first_step=round(_relative(out[0], out[k]), 4),
        )
    return result


def _scheduler_summary(scheduler) -> dict:
    # Custom betas are 1,000 floats; what they mean for this benchmark is the signal left in x_T.
    config = {k: v for k, v in scheduler.config.items() if k != "trained_betas"}
    return {
        **config,
        "custom_betas": scheduler.config.get("trained_betas") is not None,
        "terminal_signal": round(float(scheduler.alphas_cumprod[-1].sqrt()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "testbed_position.json")
    args = parser.parse_args()
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(str(args.model), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    truth = load_truth(MODEL_DIR / "truth")  # the ground truth does not depend on the weights
    result = dict(
        settings=dict(steps=STEPS, guidance=GUIDANCE, seeds=list(SEEDS), scheduler=_scheduler_summary(pipe.scheduler)),
        plain_shapes_at_requested_place=plain_shapes(pipe),
        concepts=concepts(pipe, truth),
        leak=leak(pipe),
        sensitivity=sensitivity(pipe),
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
