"""Changes a mitigation makes *inside* the denoising loop, applied by the guard's taps through the
interface `memguard.signals.edits` defines (`Edits`, `editing`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..cross_attention import project
from ..signals.edits import Edits, current, editing

__all__ = [
    "AttentionEdit",
    "Edits",
    "GuidanceEdit",
    "RepulsionEdit",
    "chain",
    "clean_estimate",
    "current",
    "editing",
    "guided_clean_estimate",
]


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

    def _probabilities(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, cond):
        """(edited probabilities, unedited ones or None, value, the 4-D input shape or None)."""
        query, key, value, shape = project(attn, hidden_states, encoder_hidden_states, temb, with_value=True)
        batch = query.shape[0]
        logits = (query.float() @ key.float().transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            logits = logits + attn.prepare_attention_mask(attention_mask, key.shape[2], batch).view(
                batch, attn.heads, -1, key.shape[2]
            )
        rows = torch.zeros(batch, dtype=torch.bool, device=logits.device)
        rows[cond] = True
        edited = logits.clone()
        edited[rows] = self.edit_logits(logits[rows])
        return (
            torch.softmax(edited, dim=-1).to(value.dtype),
            torch.softmax(logits, dim=-1).to(value.dtype),
            value,
            shape,
        )

    @staticmethod
    def _merge_heads(attn, attended: torch.Tensor) -> torch.Tensor:
        batch, _, queries, head_dim = attended.shape
        return attended.transpose(1, 2).reshape(batch, queries, attn.heads * head_dim)

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, temb=None, cond=slice(None)):
        """The layer's output with the edit, computed here (a text-only cross-attention layer)."""
        residual = hidden_states
        probs, _, value, shape = self._probabilities(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, cond
        )
        out = attn.to_out[1](attn.to_out[0](self._merge_heads(attn, probs @ value)))
        if shape is not None:
            out = out.transpose(-1, -2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def change(self, attn, hidden_states, text_states, attention_mask=None, temb=None, cond=slice(None)):
        """What the edit changes in the layer's output, for a processor that attends to more than the
        text (IP-Adapter adds attention over image tokens before the output projection): everything
        after the attention is affine in it, so the processor's own output plus this change is that
        output with the text attention edited, whatever else the processor adds."""
        edited, unedited, value, shape = self._probabilities(
            attn, hidden_states, text_states, attention_mask, temb, cond
        )
        out = torch.nn.functional.linear(self._merge_heads(attn, (edited - unedited) @ value), attn.to_out[0].weight)
        if shape is not None:
            out = out.transpose(-1, -2).reshape(shape)
        return out / attn.rescale_output_factor


def _prediction(output) -> torch.Tensor:
    """The predicted tensor of a UNet output (tuple, list or output object)."""
    return output[0] if isinstance(output, (tuple, list)) else output.sample


def _with_prediction(output, prediction: torch.Tensor):
    """`output` in its own form, carrying `prediction` instead."""
    if isinstance(output, tuple):
        return (prediction, *output[1:])
    if isinstance(output, list):
        return [prediction, *output[1:]]
    output.sample = prediction
    return output


@dataclass(frozen=True)
class GuidanceEdit:
    """Jain et al.: while the timestep is above `until_timestep`, classifier-free guidance uses
    `early_scale` instead of the call's `guidance_scale` (0: no guidance, < 0: opposite guidance).
    Done on the UNet's CFG output, so the pipeline's own guidance formula yields the new scale."""

    guidance_scale: float
    early_scale: float = 0.0
    until_timestep: float = 650.0

    def __call__(self, timestep: float, output, sample: torch.Tensor | None = None):
        if timestep <= self.until_timestep or self.guidance_scale == 0:
            return output
        eps = _prediction(output)
        if eps.shape[0] % 2:
            return output
        eps_uncond, eps_text = eps.chunk(2)
        ratio = self.early_scale / self.guidance_scale
        return _with_prediction(output, torch.cat([eps_uncond, eps_uncond + ratio * (eps_text - eps_uncond)]))


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def clean_estimate(prediction: torch.Tensor, sample: torch.Tensor, alpha_bar: float, prediction_type: str):
    """The predicted clean latents x0 from a model prediction at x_t, sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""
    a, s = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return (sample - s * prediction) / a
    if prediction_type == "v_prediction":
        return a * sample - s * prediction
    return prediction


def alpha_bar_at(alphas_cumprod: torch.Tensor, timestep: float) -> float:
    """The noise schedule's alpha-bar at a UNet timestep (rounded to the training timestep)."""
    return float(alphas_cumprod[min(max(int(round(timestep)), 0), len(alphas_cumprod) - 1)])


def guided_clean_estimate(
    uncond: torch.Tensor | None,
    text: torch.Tensor,
    x_t: torch.Tensor,
    timestep: float,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    guidance_scale: float,
) -> tuple[torch.Tensor, float]:
    """(x0, alpha_bar): the clean estimate of the guided prediction (the text one alone when `uncond`
    is None) at x_t and `timestep`, and the schedule's alpha-bar there."""
    text = text.float()
    prediction = text if uncond is None else uncond.float() + guidance_scale * (text - uncond.float())
    alpha_bar = alpha_bar_at(alphas_cumprod, timestep)
    return clean_estimate(prediction, x_t.float(), alpha_bar, prediction_type), alpha_bar


def _prediction_shift(x0_shift: torch.Tensor, alpha_bar: float, prediction_type: str) -> torch.Tensor:
    """The change of a model prediction at a fixed x_t that moves its clean estimate by `x0_shift`."""
    a, s = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return -(a / s) * x0_shift
    if prediction_type == "v_prediction":
        return -x0_shift / s
    return x0_shift


def layout_kernel(layout_share: float, side: int) -> int:
    """The odd box width, in latent pixels, of `layout_share` of a latent side of `side` (1: no box)."""
    return 2 * int(layout_share * side / 2) + 1


def detail(x: torch.Tensor, kernel: int = 1) -> torch.Tensor:
    """`x` (..., h, w) without each channel's mean and, for `kernel` > 1, without its local average over
    a `kernel` x `kernel` box (edges replicated): the arrangement of detail, not the layout."""
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    if kernel <= 1:
        return x
    flat = x.reshape(-1, 1, *x.shape[-2:])
    pad = kernel // 2
    local = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(flat, (pad,) * 4, mode="replicate"), kernel, 1)
    return (flat - local).reshape(x.shape)


@dataclass(frozen=True, eq=False)
class RepulsionEdit:
    """Dissimilarity guidance (Chen et al. 2024) towards nothing in particular, away from an anchor:
    at every step whose clean estimate x0 is still similar to `anchor` (cosine of the two with each
    latent channel's mean removed above `similarity_floor`), x0 is moved away from the anchor by
    `strength` x the anchor's size x how far the similarity exceeds the floor (0 at the floor, 1 at
    identity). Channel means are left alone: they carry the picture's overall colours, which the
    prompt asks for; a copy repeats the arrangement of detail. With `layout_share` > 0 each latent
    pixel's average over a box of that share of the latent's side is left alone too (the layout:
    where the prompt's things sit, in which colours), and only the detail within it is compared and
    pushed. The shift is put on the text branch, so the pipeline's guidance formula carries it whole
    into the guided prediction."""

    anchor: torch.Tensor  # (1, C, h, w) clean latents to move away from
    alphas_cumprod: torch.Tensor  # the scheduler's, per training timestep
    prediction_type: str  # what the UNet predicts: one of PREDICTION_TYPES
    guidance_scale: float
    strength: float = 2.0
    similarity_floor: float = 0.7
    layout_share: float = 0.0  # 0: only channel means are left alone

    def _detail(self, x: torch.Tensor) -> torch.Tensor:
        return detail(x.float(), layout_kernel(self.layout_share, min(x.shape[-2:])))

    @cached_property
    def _anchor_detail(self) -> torch.Tensor:
        """The anchor's detail: fixed for the whole re-sample, so computed once, not at every step."""
        return self._detail(self.anchor)

    def similarity(self, x0: torch.Tensor) -> torch.Tensor:
        """(B,) cosine similarity of the detail of each image's clean estimate with the anchor's."""
        return self._similarity_of(self._detail(x0))

    def _similarity_of(self, detail_x0: torch.Tensor) -> torch.Tensor:
        x, a = detail_x0.flatten(1), self._anchor_detail.to(detail_x0.device).flatten(1)
        return (x * a).sum(1) / (x.norm(dim=1) * a.norm(dim=1)).clamp_min(1e-12)

    def __call__(self, timestep: float, output, sample: torch.Tensor | None = None):
        if sample is None:
            return output
        prediction = _prediction(output)
        channels = self.anchor.shape[1]
        guided = self.guidance_scale > 1 and prediction.shape[0] % 2 == 0
        uncond, text = prediction[:, :channels].chunk(2) if guided else (None, prediction[:, :channels])
        x_t = sample[-text.shape[0] :, :channels]  # under guidance the text rows come last
        x0, alpha_bar = guided_clean_estimate(
            uncond, text, x_t, float(timestep), self.alphas_cumprod, self.prediction_type, self.guidance_scale
        )
        detail_x0 = self._detail(x0)  # compared and pushed: computed once a step
        excess = ((self._similarity_of(detail_x0) - self.similarity_floor) / (1 - self.similarity_floor)).clamp_min(0)
        if not bool((excess > 0).any()):
            return output
        anchor = self._anchor_detail.to(x0.device)
        away = detail_x0 - anchor
        size = away.flatten(1).norm(dim=1).clamp_min(1e-12)
        shift = (self.strength * excess * anchor.flatten(1).norm(dim=1) / size)[:, None, None, None] * away
        change = _prediction_shift(shift, alpha_bar, self.prediction_type)
        edited = prediction.clone()
        rows = slice(prediction.shape[0] - change.shape[0], None)  # the text rows (all rows without guidance)
        scale = self.guidance_scale if guided else 1.0
        edited[rows, :channels] += (change / scale).to(prediction.dtype)
        return _with_prediction(output, edited)


@dataclass(frozen=True)
class ChainedOutputEdit:
    """Two output edits in order (a guidance schedule and a repulsion on one re-sample)."""

    first: object
    second: object

    def __call__(self, timestep: float, output, sample: torch.Tensor | None = None):
        return self.second(timestep, self.first(timestep, output, sample), sample)


def chain(first, second):
    """`second` after `first`; either may be None."""
    if first is None or second is None:
        return second if first is None else first
    return ChainedOutputEdit(first, second)
