"""memguard's own errors for bad input.

Every error memguard raises about what it was given (an argument, a file, a field of a file) is a
`MemguardError`, and also a `ValueError` or a `TypeError`, so code written to catch those keeps
working. Messages name the argument, or the file and the field; they never quote a prompt.
"""

from __future__ import annotations


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


__all__ = ["MemguardError", "MemguardTypeError", "MemguardValueError", "shown"]
