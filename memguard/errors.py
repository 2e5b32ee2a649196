"""memguard's own errors for bad input.

Every error memguard raises about what it was given (an argument, a file, a field of a file) is a
`MemguardError`, and also a `ValueError` or a `TypeError`, so code written to catch those keeps
working. Messages name the argument, or the file and the field; they never quote a prompt.
"""

from __future__ import annotations

import numbers


class MemguardError(Exception):
    """Base class of memguard's errors about its input."""


class MemguardValueError(MemguardError, ValueError):
    """A value memguard cannot use: out of range, unknown, malformed, too large."""


class MemguardTypeError(MemguardError, TypeError):
    """A value of the wrong type, given in code (a file's wrong types are `MemguardValueError`s)."""


def shown(value, limit: int = 60) -> str:
    """`value` as an error message shows it: its repr, cut short (a file's field may be huge).
    Never pass a prompt: messages do not quote prompts at all."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_positive_int(value, name: str) -> int:
    """`value` as an int >= 1 (any integral number, NumPy's too, but not a bool), or an error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MemguardTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise MemguardValueError(f"{name} must be >= 1, got {value}")
    return int(value)


__all__ = ["MemguardError", "MemguardTypeError", "MemguardValueError", "require_positive_int", "shown"]
