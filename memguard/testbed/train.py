"""Train the testbed model from seeds: ``python -m memguard.testbed.train --out DIR``.

Two stages: the VAE (MSE + a tiny KL, so reconstructions stay sharp), then the UNet and the text
encoder jointly on the VAE's latents, keeping EMA weights, which are what gets saved. The result is
a full diffusers pipeline folder plus the ground truth (``truth/``) and the guard's calibration
(``calibration.json``).

``--init-from DIR`` continues from a testbed folder's weights instead of starting from seeds (its VAE
trained further for ``--vae-steps``, its UNet and text encoder for ``--steps`` with the given ``--lr``,
``--final-lr`` and ``--warmup``): how the shipped weights took on the composition items when a full
retrain did not fit the CPU time at hand (docs/testbed.md).

Every checkpoint (``--checkpoint-every`` steps) also writes ``training_state.pt`` into the folder: the
live weights, the EMA, the optimizer and every random state. ``--resume`` continues from it, with the
same options, to the weights an uninterrupted run writes; the file is removed when training ends.

``--family sdxl`` trains the SDXL-architecture variant on the same data with the same recipe (two text
encoders, pooled embeddings and time ids; caption dropout gives zero text conditioning, as SDXL's
empty negative prompt does) and saves a `StableDiffusionXLPipeline` folder.

The defaults reproduce the shipped weights (51.8 min on a 2-core CPU): v-prediction, SD's betas rescaled
to a terminal signal of 0.02 (so that the model follows position words) and 2% caption dropout on the
duplicated images (so that prompt-free generations rarely copy them). ``--prediction-type epsilon
--terminal-signal none --duplicate-caption-dropout none`` trains the earlier, position-blind recipe;
the README's testbed section measures what each choice changes. On a shared CPU run it with
``OMP_WAIT_POLICY=PASSIVE``: with spinning OpenMP threads, any other busy process slowed
training 15x here.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from tqdm import tqdm

from .calibrate import calibrate_testbed
from .data import TrainingSet, build_training_set
from .models import (
    XL_TIME_IDS,
    ModelSizes,
    build_text_encoder,
    build_unet,
    build_vae,
    build_xl_text_encoders,
    build_xl_unet,
    check_terminal_signal,
    inference_scheduler,
    training_scheduler,
)
from .tokenizer import load_clip_tokenizer
from .truth import write_truth

PREDICTION_TYPES = ("epsilon", "v_prediction")
STATE_FILE = "training_state.pt"  # in the output folder while training runs, for --resume
# options that do not change what a run computes, so a resumed run may set them differently
RESUMABLE_CHANGES = ("checkpoint_every",)
FAMILIES = ("sd", "sdxl")  # the pipeline architecture: Stable Diffusion 1.x/2.x, or SDXL


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    n_broad: int = 30_000
    sizes: ModelSizes = field(default_factory=ModelSizes)
    batch: int = 64
    vae_steps: int = 1000
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    steps: int = 4500
    lr: float = 1e-3
    final_lr: float = 1e-4
    warmup: int = 200
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    # The defaults are the shipped weights' recipe (README, "The testbed").
    prediction_type: str = "v_prediction"  # SD 2.x's target; "epsilon" is SD 1.x's
    # sqrt(alpha_bar_T) after rescaling SD's betas (see models.SCHEDULE). None keeps SD's 0.068, whose
    # x_T leaks the layout so that the model ignores position words; 0 is zero terminal SNR, where
    # Wen's first-step magnitude cannot see template copies; 0.02 follows position words and keeps it.
    terminal_signal: float | None = 0.02
    # Caption dropout of the duplicated (memorized) images; None: the same 10% as every image, and then
    # a third of prompt-free generations (what a re-sample that masks the whole prompt is) copy one;
    # 0 breaks their replication at guidance 7.5 (see data.TrainingSet).
    duplicate_caption_dropout: float | None = 0.02
    family: str = "sd"  # "sdxl": two text encoders, pooled embeddings and time ids
    # a testbed folder whose VAE to reuse instead of training one: the VAE stage depends on the seed and
    # the data only, so a folder trained with the same seed holds the VAE this run would train, and the
    # UNet stage (seeded on its own) then computes what a run that trains the VAE computes
    vae_from: Path | None = None
    # a testbed folder to continue from: its VAE (trained further for vae_steps, 0 keeps it as it is),
    # UNet and text encoder(s) are the starting weights, and the schedule runs again over `steps`
    init_from: Path | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.terminal_signal is not None:
            check_terminal_signal(self.terminal_signal)  # before any training, not when the schedule is built
        if self.duplicate_caption_dropout is not None and not 0.0 <= self.duplicate_caption_dropout <= 1.0:
            raise ValueError(f"duplicate_caption_dropout must be in [0, 1], got {self.duplicate_caption_dropout!r}")
        if self.init_from is not None and self.vae_from is not None:
            raise ValueError("pass --init-from or --vae-from, not both: --init-from continues its own VAE")
        if self.terminal_signal == 0.0 and self.prediction_type == "epsilon":
            # At SNR 0 the noise is all there is in x_T: predicting it is trivial and x_0 is undefined.
            raise ValueError(
                "terminal_signal=0 (zero terminal SNR) needs prediction_type='v_prediction'; "
                "pass --prediction-type v_prediction"
            )


def _as_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC in [0, 255] -> float NCHW in [-1, 1], the range the SD pipeline decodes to."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(config: TrainConfig, data: TrainingSet, device: torch.device, vae=None):
    """A VAE trained for config.vae_steps, from scratch or further from `vae`."""
    vae = (build_vae(config.sizes) if vae is None else vae).to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed + 1)
    bar = tqdm(range(config.vae_steps), desc="vae", unit="step")
    for step in bar:
        index, _ = data.sample(rng, config.batch)
        images = _as_tensor(data.images[index], device)
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(reconstruction, images)
        loss = mse + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(mse=f"{mse.item():.5f}")
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_all(vae, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Posterior means of every training image, scaled to unit variance (the VAE's scaling_factor)."""
    latents = torch.cat(
        [vae.encode(_as_tensor(images[i : i + 256], device)).latent_dist.mean for i in range(0, len(images), 256)]
    )
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    return latents * scaling


def _lr(config: TrainConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.final_lr + 0.5 * (config.lr - config.final_lr) * (1 + float(np.cos(np.pi * progress)))


class TextConditioning:
    """The family's text encoders and how the UNet is conditioned on a batch of token ids, exactly as
    the family's pipeline conditions it at inference (so training and sampling see the same inputs)."""

    def __init__(self, config: TrainConfig, device: torch.device):
        self.family = config.family
        if self.family == "sd":
            self.encoders = [build_text_encoder(config.sizes).to(device).train()]
        else:
            self.encoders = [e.to(device).train() for e in build_xl_text_encoders(config.sizes)]
        self.time_ids = torch.tensor([XL_TIME_IDS], dtype=torch.float32, device=device)

    def __call__(self, encoders, ids: torch.Tensor, dropped: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(encoder states, further UNet keyword arguments); `dropped` marks captions left out."""
        if self.family == "sd":  # SD encodes the empty caption: the dropped rows' ids are those of ""
            return encoders[0](ids)[0], {}
        # SDXL: the penultimate states of both encoders, concatenated; the second's pooled projection;
        # a dropped caption is all zeros, as the pipeline's unconditional branch (force_zeros_for_empty_prompt)
        first = encoders[0](ids, output_hidden_states=True).hidden_states[-2]
        second = encoders[1](ids, output_hidden_states=True)
        keep = (~dropped).to(first.dtype)
        states = torch.cat([first, second.hidden_states[-2]], dim=-1) * keep[:, None, None]
        pooled = second.text_embeds * keep[:, None]
        time_ids = self.time_ids.expand(len(ids), -1)
        return states, {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


def save_pipeline(out: Path, vae, text_encoders, unet, tokenizer, config: TrainConfig) -> None:
    # CPU copies: a checkpoint mid-training must not move the live (EMA) modules off their device
    vae, unet = copy.deepcopy(vae).cpu(), copy.deepcopy(unet).cpu()
    text_encoders = [copy.deepcopy(e).cpu() for e in text_encoders]
    scheduler = inference_scheduler(config.prediction_type, config.terminal_signal)
    if config.family == "sd":
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoders[0],
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoders[0],
            text_encoder_2=text_encoders[1],
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    pipe.save_pretrained(str(out), safe_serialization=True)


def _plain(config: TrainConfig) -> dict:
    """The config as plain values (paths as strings), to store beside a training state and compare."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}


def _save_state(out: Path, config, step, unet, encoders, ema_unet, ema_text, optimizer, rng, generator) -> None:
    state = dict(
        config=_plain(config),
        step=step,
        unet=unet.state_dict(),
        text=[e.state_dict() for e in encoders],
        ema_unet=ema_unet.state_dict(),
        ema_text=[e.state_dict() for e in ema_text],
        optimizer=optimizer.state_dict(),
        numpy_rng=json.dumps(rng.bit_generator.state, default=int),  # plain text: loads without unpickling
        generator=generator.get_state(),
        torch_rng=torch.get_rng_state(),
    )
    partial = out / (STATE_FILE + ".partial")
    torch.save(state, partial)
    partial.replace(out / STATE_FILE)  # a run killed while saving leaves the previous state whole


def load_state(out: Path, config: TrainConfig) -> dict:
    """The training state a checkpoint left in `out`, checked against `config` (every option that
    changes what the run computes must be the same)."""
    path = out / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no {STATE_FILE} in {out} (each checkpoint writes one until training ends)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved, given = state["config"], _plain(config)
    differ = sorted(k for k in given if k not in RESUMABLE_CHANGES and saved.get(k) != given[k])
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {given[k]!r} here" for k in differ)
        raise ValueError(f"--resume: the options differ from the interrupted run's ({shown})")
    return state


def _restore(state, unet, encoders, ema_unet, ema_text, optimizer, rng, generator) -> int:
    """Load a saved training state into the live objects; returns the step to continue from."""
    unet.load_state_dict(state["unet"])
    ema_unet.load_state_dict(state["ema_unet"])
    for encoder, saved in zip(encoders, state["text"], strict=True):
        encoder.load_state_dict(saved)
    for encoder, saved in zip(ema_text, state["ema_text"], strict=True):
        encoder.load_state_dict(saved)
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def train(config: TrainConfig, out: Path, resume: bool = False) -> None:
    """Train into `out`; `resume`: continue from the training state its last checkpoint left."""
    state = load_state(out, config) if resume else None
    torch.manual_seed(config.seed)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)  # tiny weights/gradients otherwise slow CPU training 30x
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    data = build_training_set(config.seed, config.n_broad, config.duplicate_caption_dropout)
    tokenizer = load_clip_tokenizer()

    if state is not None:  # the checkpoint saved the VAE this run trained or reused
        vae = AutoencoderKL.from_pretrained(out / "vae").to(device).eval().requires_grad_(False)
    elif config.vae_from is not None:
        vae = AutoencoderKL.from_pretrained(Path(config.vae_from) / "vae").to(device).eval().requires_grad_(False)
    elif config.init_from is not None:
        vae = AutoencoderKL.from_pretrained(Path(config.init_from) / "vae")
        vae = train_vae(config, data, device, vae) if config.vae_steps else vae.to(device).eval().requires_grad_(False)
    else:
        vae = train_vae(config, data, device)
    latents = encode_all(vae, data.images, device)

    torch.manual_seed(config.seed + 4)  # the UNet stage's own seed: the same weights whether or not the VAE trained
    unet = (build_unet if config.family == "sd" else build_xl_unet)(config.sizes).to(device).train()
    text = TextConditioning(config, device)
    if config.init_from is not None:
        start = DiffusionPipeline.from_pretrained(config.init_from)
        unet.load_state_dict(start.unet.state_dict())
        names = ("text_encoder",) if config.family == "sd" else ("text_encoder", "text_encoder_2")
        for encoder, name in zip(text.encoders, names, strict=True):
            encoder.load_state_dict(getattr(start, name).state_dict())
        del start
    ema_unet, ema_text = copy.deepcopy(unet).eval(), [copy.deepcopy(e).eval() for e in text.encoders]
    params = list(unet.parameters()) + [p for e in text.encoders for p in e.parameters()]
    ema_params = list(ema_unet.parameters()) + [p for e in ema_text for p in e.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    noise_schedule = training_scheduler(config.prediction_type, config.terminal_signal)
    rng = np.random.default_rng(config.seed + 2)
    generator = torch.Generator(device).manual_seed(config.seed + 3)

    first_step = 0
    if state is not None:
        first_step = _restore(state, unet, text.encoders, ema_unet, ema_text, optimizer, rng, generator)
    bar = tqdm(range(first_step, config.steps), desc="unet+text", unit="step", initial=first_step, total=config.steps)
    for step in bar:
        index, captions = data.sample(rng, config.batch)
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        x0 = latents[torch.from_numpy(index).to(device)]
        noise = torch.randn(x0.shape, generator=generator, device=device)
        t = torch.randint(
            0, noise_schedule.config.num_train_timesteps, (len(index),), generator=generator, device=device
        )
        dropped = torch.tensor([c == "" for c in captions], device=device)
        states, extra = text(text.encoders, ids, dropped)
        prediction = unet(noise_schedule.add_noise(x0, noise, t), t, states, **extra).sample
        target = noise if config.prediction_type == "epsilon" else noise_schedule.get_velocity(x0, noise, t)
        loss = F.mse_loss(prediction, target)
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))  # short warm-up of the average
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save_pipeline(out, vae, ema_text, ema_unet, tokenizer, config)
            if step + 1 < config.steps:
                _save_state(out, config, step + 1, unet, text.encoders, ema_unet, ema_text, optimizer, rng, generator)
    (out / STATE_FILE).unlink(missing_ok=True)  # the weights are final: nothing is left to resume
    write_truth(out / "truth")
    calibrate_testbed(out)  # the guard's threshold for this model, 1% FPR on benign prompts
    minutes = (time.perf_counter() - started) / 60
    print(f"trained in {minutes:.1f} min on {device}; config {asdict(config)}; saved to {out}")


def _float_or_none(text: str) -> float | None:
    """A number, or "none" for the option's "not set" (argparse's type)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    defaults = TrainConfig()
    for name in ("seed", "n_broad", "vae_steps", "steps", "batch", "checkpoint_every"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=defaults.prediction_type)
    parser.add_argument(
        "--family", choices=FAMILIES, default=defaults.family, help="pipeline architecture (sdxl: SDXL's, at toy size)"
    )
    parser.add_argument(
        "--vae-from", type=Path, default=None, help="reuse this testbed folder's VAE (trained with the same seed)"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="continue from this testbed folder's weights (its VAE further for --vae-steps steps, 0 keeps it)",
    )
    for name in ("lr", "final_lr", "vae_lr"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument(
        "--terminal-signal",
        type=_float_or_none,
        default=defaults.terminal_signal,
        help="rescale SD's betas so that sqrt(alpha_bar_T) is this (0: x_T is pure noise, needs v_prediction; "
        "'none': SD's betas as they are)",
    )
    parser.add_argument(
        "--duplicate-caption-dropout",
        type=_float_or_none,
        default=defaults.duplicate_caption_dropout,
        help="caption dropout of the duplicated images ('none': the 10%% of every image)",
    )
    parser.add_argument(
        "--resume", action="store_true", help=f"continue from the {STATE_FILE} the last checkpoint left in --out"
    )
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if k not in ("out", "resume")}
    train(TrainConfig(**overrides), args.out, resume=args.resume)


if __name__ == "__main__":
    main()
