"""How long a prompt is, in the tokens its text encoder reads.

A calibration records the shortest and longest of its prompts (`Calibration.prompt_tokens`) and the
guard reports, for each image, whether its prompt lies in that range (`Calibration.coverage`). The
count is the prompt's own tokens: no begin, end or padding token, and no more than the encoder's
window leaves for them (the pipeline truncates the rest).
"""

from __future__ import annotations

from collections.abc import Sequence

# CLIP's window: what a tokenizer without a usable model_max_length is taken to read
DEFAULT_WINDOW = 77


def window(tokenizer) -> int:
    """The number of positions the text encoder reads (begin and end tokens included)."""
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and not isinstance(length, bool) and 2 < length <= 100_000:
        return length
    return DEFAULT_WINDOW


def prompt_token_counts(tokenizer, prompts: Sequence[str]) -> list[int] | None:
    """Each prompt's own tokens as its pipeline encodes it (truncated to the window, special tokens
    not counted); None when the tokenizer cannot count them that way (a tokenizer of its own kind):
    the length is then unknown, which neither a calibration nor a guarded call fails over."""
    if not prompts:
        return []
    room = window(tokenizer) - 2
    try:
        encoded = tokenizer(list(prompts), add_special_tokens=False, truncation=True, max_length=room)
        return [min(len(ids), room) for ids in encoded["input_ids"]]
    except Exception:  # any tokenizer's own failure: an informational count is never worth a failed call
        return None
