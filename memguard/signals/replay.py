"""The first step's UNet inputs, kept so the guard can evaluate the same model inputs again.

The guard's own UNet evaluations (the residual score of a prompt without its concepts, gradient
attribution, mitigations that optimize a prompt or a starting noise, the extra unconditional pass)
must see what the pipeline's UNet saw: SDXL's pooled text embeddings and time ids, ControlNet's
residuals, IP-Adapter image embeddings, an inpainting UNet's mask channels. Rather than re-derive
those per pipeline family, the tap keeps the loop's first UNet call and `ImageInputs` replays it for
one image, with the sample and the text conditioning swapped where the guard needs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


def select_rows(value, batch: int, rows: slice):
    """`value` with every tensor of leading dimension `batch` cut to `rows` (dicts, lists and tuples
    walked); anything else (a scalar timestep, `cross_attention_kwargs`' numbers) kept as it is."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, Mapping):
        return {k: select_rows(v, batch, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_rows(v, batch, rows) for v in value)
    return value


def expand_rows(value, draws: int):
    """Leaves cut to one row repeated `draws` times (views, no copy)."""
    if isinstance(value, torch.Tensor):
        return value.expand(draws, *value.shape[1:]) if value.dim() > 0 and value.shape[0] == 1 else value
    if isinstance(value, Mapping):
        return {k: expand_rows(v, draws) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(expand_rows(v, draws) for v in value)
    return value


def _join(uncond, cond):
    """The classifier-free-guidance batch [uncond, cond] of two kwargs trees of the same structure."""
    if isinstance(cond, torch.Tensor) and isinstance(uncond, torch.Tensor):
        if uncond is cond or cond.dim() == 0:
            return cond
        return torch.cat([uncond.to(cond.dtype), cond])
    if isinstance(cond, Mapping):
        return {k: _join(uncond[k], v) if k in uncond else v for k, v in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(_join(u, c) for u, c in zip(uncond, cond, strict=True))
    return cond


def merge(base: Mapping, overrides: Mapping | None) -> dict:
    """`base` with `overrides` applied, nested dicts merged key by key (e.g. only SDXL's pooled
    `text_embeds` inside `added_cond_kwargs`)."""
    merged = dict(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def compose_sample(latents: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """A UNet input from `latents` (the denoised channels) and the conditioning channels a UNet
    takes beyond them (an inpainting UNet's mask and masked-image latents), copied from `template`."""
    extra = template.shape[1] - latents.shape[1]
    if extra <= 0:
        return latents
    tail = template[:, latents.shape[1] :]
    return torch.cat([latents, tail.expand(latents.shape[0], *tail.shape[1:]).to(latents.dtype)], dim=1)


@dataclass(frozen=True)
class UNetCall:
    """One call of the pipeline's UNet: its sample, timestep and every keyword argument."""

    sample: torch.Tensor  # (B, C_in, h, w); B = 2N under classifier-free guidance ([uncond, cond])
    timestep: object
    kwargs: dict  # encoder_hidden_states, added_cond_kwargs, residuals, ... (return_dict excluded)
    guided: bool  # the batch is [uncond, cond]
    latent_channels: int  # channels the UNet predicts (the rest of `sample` is conditioning)

    @property
    def batch(self) -> int:
        return self.sample.shape[0]

    @property
    def num_images(self) -> int:
        return self.batch // 2 if self.guided else self.batch

    def image(self, index: int) -> ImageInputs:
        """Image `index`'s rows: its text-conditioned row and, under guidance, its unconditional one."""
        n = self.num_images
        cond_row = slice(n + index, n + index + 1) if self.guided else slice(index, index + 1)
        cond = select_rows(self.kwargs, self.batch, cond_row)
        uncond = select_rows(self.kwargs, self.batch, slice(index, index + 1)) if self.guided else None
        return ImageInputs(
            sample=self.sample[cond_row],
            timestep=select_rows(self.timestep, self.batch, cond_row),
            cond=cond,
            uncond=uncond,
            latent_channels=self.latent_channels,
        )


@dataclass(frozen=True)
class ImageInputs:
    """The first step's UNet inputs of one image (batch of one)."""

    sample: torch.Tensor  # (1, C_in, h, w) the UNet input of the text-conditioned row
    timestep: object
    cond: dict  # keyword arguments of the text-conditioned row
    uncond: dict | None  # of the unconditional row; None when guidance was off
    latent_channels: int

    @classmethod
    def from_text_states(
        cls, sample: torch.Tensor, timestep, cond_states: torch.Tensor, uncond_states: torch.Tensor | None
    ) -> ImageInputs:
        """Inputs of a plain text-conditioned UNet (Stable Diffusion 1.x/2.x): the text states only."""
        return cls(
            sample=sample,
            timestep=timestep,
            cond={"encoder_hidden_states": cond_states},
            uncond=None if uncond_states is None else {"encoder_hidden_states": uncond_states},
            latent_channels=sample.shape[1],
        )

    @property
    def cond_states(self) -> torch.Tensor:
        """(1, T, D) the prompt's text-encoder states, as the UNet saw them."""
        return self.cond["encoder_hidden_states"]

    @property
    def uncond_states(self) -> torch.Tensor | None:
        return None if self.uncond is None else self.uncond["encoder_hidden_states"]

    @property
    def latents(self) -> torch.Tensor:
        """The denoised channels of the first UNet input (the scheduler-scaled x_T or noised image)."""
        return self.sample[:, : self.latent_channels]

    def predict(
        self,
        unet: torch.nn.Module,
        latents: torch.Tensor | None = None,
        *,
        cond: Mapping | None = None,
        uncond: Mapping | None = None,
        guided: bool = True,
        timestep=None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(eps_uncond, eps_text) of one UNet call on `latents` ((k, C, h, w), default: the first
        step's own) with the first step's inputs, `cond` / `uncond` overriding keyword arguments
        (e.g. new text states) and `timestep` the first step's (a later step of a roll-out).
        `guided=False` evaluates the text branch only (eps_uncond None)."""
        sample = self.sample if latents is None else compose_sample(latents, self.sample)
        timestep = self.timestep if timestep is None else timestep
        draws = sample.shape[0]
        text = expand_rows(merge(self.cond, cond), draws)
        if not guided:
            return None, unet(sample, timestep, **text, return_dict=False)[0]
        if self.uncond is None and uncond is None:
            raise ValueError("no unconditional inputs: guidance was off for this call")
        plain = expand_rows(merge(self.uncond or {}, uncond), draws)
        out = unet(torch.cat([sample, sample]), timestep, **_join(plain, text), return_dict=False)[0]
        eps_uncond, eps_text = out.chunk(2)
        return eps_uncond, eps_text
