"""Query, key and value of a diffusers cross-attention layer, computed as its processors compute them.

Shared by the signal recorder (which reads attention probabilities) and the attention-rescaling
mitigation (which recomputes the layer's output with edited logits), so both follow one recipe.
"""

from __future__ import annotations

import torch


def project(
    attn, hidden_states: torch.Tensor, context: torch.Tensor, temb=None, *, with_value: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Size | None]:
    """(query, key, value or None, the 4-D input shape or None) with query/key/value laid out as
    (batch, heads, tokens, head_dim), after the layer's spatial, group, cross and q/k norms."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = hidden_states.shape if hidden_states.ndim == 4 else None
    if shape is not None:
        b, c, h, w = shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    batch = hidden_states.shape[0]
    key = attn.to_k(context)
    head_dim = key.shape[-1] // attn.heads

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    query, key = heads(attn.to_q(hidden_states)), heads(key)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    value = heads(attn.to_v(context)) if with_value else None
    return query, key, value, shape
