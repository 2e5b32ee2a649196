"""How in-loop edits reach the taps: the interface `signals` owns and `mitigation` implements.

A re-sample may change the denoising loop itself: the cross-attention logits of the text-conditioned
rows (attention re-scaling) or the UNet's classifier-free-guidance output (a guidance schedule). The
taps apply the edit active in the calling thread's context, so an edit touches only the re-sample
that set it, even on a UNet shared between threads.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import torch


class AttentionLogitsEdit(Protocol):
    def edit_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The edited cross-attention logits (..., tokens) of text-conditioned rows (the recorder
        applies it too, so a re-sample is scored on the attention the model really used)."""
        ...

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, cond) -> torch.Tensor:
        """The layer's output with the edit applied to the rows `cond` (a slice of the batch)."""
        ...

    def change(self, attn, hidden_states, text_states, attention_mask, temb, cond) -> torch.Tensor:
        """What the edit adds to the output of a processor that attends to more than the text
        (IP-Adapter's image tokens), which then computes the rest of the layer itself."""
        ...


class OutputEdit(Protocol):
    def __call__(self, timestep: float, output, sample: torch.Tensor | None = None):
        """The UNet's output (tuple, list or output object) at `timestep`, edited; `sample` is the
        UNet's input batch (the taps pass it; an edit that needs no x_t ignores it)."""
        ...


@dataclass(frozen=True)
class Edits:
    attention: AttentionLogitsEdit | None = None
    guidance: OutputEdit | None = None


_active: ContextVar[Edits | None] = ContextVar("memguard_active_edits", default=None)


def current() -> Edits | None:
    return _active.get()


@contextmanager
def editing(edits: Edits | None):
    token = _active.set(edits)
    try:
        yield
    finally:
        _active.reset(token)
