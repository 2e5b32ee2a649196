"""Keep prompt text out of what a guarded call lets escape: log records and exception messages.

Nothing here acts outside a guarded call: importing memguard changes no logger. While a call runs,
a filter sits on the loggers of the pipeline's own diffusers modules and rewrites the records that
this call causes (records of other threads and other calls pass untouched); an exception raised
inside the call that quotes a prompt is re-raised with the text replaced, keeping its type.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar

REDACTED = "<prompt text redacted by memguard>"
# diffusers logs the truncated tail of any prompt longer than CLIP's 77 tokens, decoded (lower-cased,
# re-spaced): it cannot be matched against the prompt, so the whole record is rewritten.
_TRUNCATION_MARKER = "was truncated because CLIP"
TRUNCATION_NOTICE = (
    "part of a prompt was truncated because CLIP can only handle sequences up to 77 tokens (text redacted by memguard)"
)

_call_secrets: ContextVar[tuple[str, ...] | None] = ContextVar("memguard_call_secrets", default=None)


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every occurrence of each secret (as written, or as Python's repr escapes it)
    replaced. Occurrences are whole: a secret that begins or ends with a letter or digit is not
    matched inside a longer word (a one-letter negative prompt "a" leaves "negative_prompt" alone).
    Overlapping occurrences of different secrets are replaced as one span, and the replacement text
    is never searched again, so no part of a prompt is left half-visible."""
    spans = []
    for form in {f for secret in secrets if secret for f in (secret, repr(secret)[1:-1])}:
        spans += [m.span() for m in re.finditer(_whole(form), text)]
    if not spans:
        return text
    merged = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, at = [], 0
    for start, end in merged:
        pieces += [text[at:start], REDACTED]
        at = end
    return "".join(pieces) + text[at:]


def _whole(form: str) -> str:
    """A pattern for `form` not preceded or followed by a word character where it starts or ends with one."""
    head = r"(?<!\w)" if re.match(r"\w", form[0]) else ""
    tail = r"(?!\w)" if re.match(r"\w", form[-1]) else ""
    return head + re.escape(form) + tail


class RedactedError(RuntimeError):
    """An error whose original type could not be rebuilt with a redacted message."""


def redacted_error(error: BaseException, secrets: Sequence[str]) -> BaseException | None:
    """A copy of `error` (same type where it can be rebuilt) without the secrets in its message, or
    None when its message holds none of them."""
    message = str(error)
    clean = redact(message, secrets)
    if clean == message:
        return None
    # rebuilt from its arguments, redacted (a KeyError quotes its key in str(): rebuilt from the message
    # it would quote it twice), else from the redacted message; either way the copy shows no secret
    args = [redact(a, secrets) if isinstance(a, str) else a for a in error.args]
    for rebuild in (lambda: type(error)(*args), lambda: type(error)(clean)):
        try:
            copy = rebuild()
            shown_text = str(copy)
        except Exception:
            continue
        if redact(shown_text, secrets) == shown_text:
            return copy
    return RedactedError(f"{type(error).__name__}: {clean}")


class _CallRecords(logging.Filter):
    """Rewrites records made inside a guarded call (the calling context's secrets are set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _call_secrets.get()
        if secrets is None:
            return True
        message = record.getMessage()
        if _TRUNCATION_MARKER in message:
            record.msg, record.args = TRUNCATION_NOTICE, ()
        else:
            clean = redact(message, secrets)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


_FILTER = _CallRecords()
_lock = threading.Lock()
_users: dict[str, int] = {}


@contextmanager
def guarded_logging(logger_names: Sequence[str], secrets: Sequence[str]):
    """For the duration, records that this context causes on these loggers lose the secrets."""
    with _lock:
        for name in logger_names:
            if _users.get(name, 0) == 0:
                logging.getLogger(name).addFilter(_FILTER)
            _users[name] = _users.get(name, 0) + 1
    token = _call_secrets.set(tuple(secrets))
    try:
        yield
    finally:
        _call_secrets.reset(token)
        with _lock:
            for name in logger_names:
                _users[name] -= 1
                if _users[name] == 0:
                    del _users[name]
                    logging.getLogger(name).removeFilter(_FILTER)


def pipeline_loggers(pipe) -> list[str]:
    """The loggers of the diffusers modules that define the pipeline's class and its bases."""
    return sorted({cls.__module__ for cls in type(pipe).__mro__ if cls.__module__.startswith("diffusers.")})
