"""Trigger attribution: which words of the prompt carry the memorization signal.

Token scores come from cross-attention mass per token (free: the guard already reads it) or,
optionally, from the gradient of the noise magnitude with respect to each token embedding (Wen et
al. 2024; one backward pass through the UNet). Sub-word tokens are merged back into the prompt's
words and contiguous trigger words into spans with character offsets, so a report can point at
"Ann Graham Lotz" rather than token 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..report import Trigger
from .registry import words_with_offsets

AttributionMethod = Literal["attention", "gradient"]
ATTRIBUTION_METHODS: tuple[str, ...] = ("attention", "gradient")


def token_offsets(tokenizer, prompt: str, length: int) -> list[tuple[int, int]] | None:
    """Character offsets of each of the `length` text-encoder positions ((0, 0) for special and
    padding tokens), or None when the tokenizer cannot report offsets (slow tokenizers)."""
    try:
        encoded = tokenizer(
            prompt, padding="max_length", max_length=length, truncation=True, return_offsets_mapping=True
        )
    except (NotImplementedError, TypeError, ValueError):
        return None
    offsets = encoded.get("offset_mapping")
    if offsets is None:
        return None
    return [tuple(map(int, pair)) for pair in offsets]


@dataclass(frozen=True)
class WordShare:
    start: int
    end: int
    share: float


def word_shares(prompt: str, token_scores: torch.Tensor, offsets: list[tuple[int, int]]) -> list[WordShare]:
    """Each word's share of the content tokens' total score (sub-word tokens summed into their word)."""
    words = words_with_offsets(prompt)
    totals = [0.0] * len(words)
    scores = token_scores.detach().float().cpu().tolist()
    for (start, end), score in zip(offsets, scores, strict=False):
        if end <= start:
            continue  # special token or padding
        for k, (_, ws, we) in enumerate(words):
            if ws < end and start < we:
                totals[k] += max(score, 0.0)
                break
    total = sum(totals)
    return [WordShare(ws, we, (t / total) if total > 0 else 0.0) for (_, ws, we), t in zip(words, totals, strict=False)]


def trigger_spans(prompt: str, shares: list[WordShare], min_ratio: float = 1.0) -> list[Trigger]:
    """Words whose share is at least `min_ratio` times the uniform share, merged into spans of
    consecutive words (punctuation between them stays inside the span)."""
    if not shares:
        return []
    cut = min_ratio / len(shares)
    spans: list[list[WordShare]] = []
    previous_hit = False
    for word in shares:
        hit = word.share >= cut
        if hit and previous_hit:
            spans[-1].append(word)
        elif hit:
            spans.append([word])
        previous_hit = hit
    return [
        Trigger(prompt[g[0].start : g[-1].end], g[0].start, g[-1].end, round(sum(w.share for w in g), 4)) for g in spans
    ]


def span_share(shares: list[WordShare], start: int, end: int) -> float:
    return round(sum(w.share for w in shares if start <= w.start and w.end <= end), 4)


def gradient_token_scores(unet: torch.nn.Module, inputs) -> torch.Tensor:
    """(T,) |d ||eps(x, c) - eps(x, 0)|| / d c_token| for one image (`inputs`: its first step's UNet
    inputs, a `memguard.signals.replay.ImageInputs`): Wen et al.'s token significance."""
    with torch.no_grad():
        eps_uncond, _ = inputs.predict(unet)
    with torch.enable_grad():
        embeds = inputs.cond_states.detach().clone().requires_grad_(True)
        _, eps_text = inputs.predict(unet, cond={"encoder_hidden_states": embeds}, guided=False)
        magnitude = (eps_text.float() - eps_uncond.float()).norm()
        (grad,) = torch.autograd.grad(magnitude, embeds)
    return grad[0].float().norm(dim=-1)
