"""Changes a mitigation makes *inside* the denoising loop, applied by the guard's taps through the
interface `memguard.signals.edits` defines (`Edits`, `editing`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cross_attention import project
from ..signals.edits import Edits, current, editing

__all__ = ["AttentionEdit", "Edits", "GuidanceEdit", "current", "editing"]


@dataclass(frozen=True)
class AttentionEdit:
    """Ren et al. 2024: on the text-conditioned rows, scale the begin token's attention logit and
    mask the unintended trigger tokens (their logits set to -inf)."""

    begin_scale: float = 1.0
    masked_tokens: tuple[int, ...] = ()

    def edit_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The edit on text-conditioned attention logits (..., tokens). The recorder applies it too,
        so a re-sample is scored on the attention the model really used."""
        logits = logits.clone()
        logits[..., 0] = logits[..., 0] * self.begin_scale
        if self.masked_tokens:
            logits[..., list(self.masked_tokens)] = float("-inf")
        return logits

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, temb=None, cond=slice(None)):
        residual = hidden_states
        query, key, value, shape = project(attn, hidden_states, encoder_hidden_states, temb, with_value=True)
        batch, head_dim = query.shape[0], query.shape[-1]
        logits = (query.float() @ key.float().transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            logits = logits + attn.prepare_attention_mask(attention_mask, key.shape[2], batch).view(
                batch, attn.heads, -1, key.shape[2]
            )
        rows = torch.zeros(batch, dtype=torch.bool, device=logits.device)
        rows[cond] = True
        logits[rows] = self.edit_logits(logits[rows])
        probs = torch.softmax(logits, dim=-1).to(value.dtype)
        out = (probs @ value).transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if shape is not None:
            out = out.transpose(-1, -2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@dataclass(frozen=True)
class GuidanceEdit:
    """Jain et al.: while the timestep is above `until_timestep`, classifier-free guidance uses
    `early_scale` instead of the call's `guidance_scale` (0: no guidance, < 0: opposite guidance).
    Done on the UNet's CFG output, so the pipeline's own guidance formula yields the new scale."""

    guidance_scale: float
    early_scale: float = 0.0
    until_timestep: float = 650.0

    def __call__(self, timestep: float, output):
        if timestep <= self.until_timestep or self.guidance_scale == 0:
            return output
        eps = output[0] if isinstance(output, (tuple, list)) else output.sample
        if eps.shape[0] % 2:
            return output
        eps_uncond, eps_text = eps.chunk(2)
        ratio = self.early_scale / self.guidance_scale
        edited = torch.cat([eps_uncond, eps_uncond + ratio * (eps_text - eps_uncond)])
        if isinstance(output, tuple):
            return (edited, *output[1:])
        if isinstance(output, list):
            return [edited, *output[1:]]
        output.sample = edited
        return output
