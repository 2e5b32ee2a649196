"""Where each prompt's end token sits (detectors that read the end token's attention need it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def end_token_positions(tokenizer, prompts: Sequence[str], images_per_prompt: int = 1) -> torch.Tensor:
    """(len(prompts) * images_per_prompt,) index of the first end-of-text token of each prompt as the
    pipeline tokenizes it (padded and truncated to the tokenizer's maximum length)."""
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True
    ).input_ids
    eos = tokenizer.eos_token_id
    positions = [row.index(eos) if eos in row else len(row) - 1 for row in ids]
    return torch.tensor(positions).repeat_interleave(images_per_prompt)
