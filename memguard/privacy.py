"""Keep prompt text out of what a guarded call lets escape: log records and exception messages.

Nothing here acts outside a guarded call: importing memguard changes no logger. While a call runs,
a filter sits on the loggers of the pipeline's own diffusers modules and rewrites the records that
this call causes (records of other threads and other calls pass untouched); an exception raised
inside the call that quotes a prompt is re-raised with the text replaced, keeping its type.
"""

from __future__ import annotations

import logging
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
    replaced; longest first, so a prompt inside another is not left half-visible."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, repr(secret)[1:-1]}:
            text = text.replace(form, REDACTED)
    return text


class RedactedError(RuntimeError):
    """An error whose original type could not be rebuilt with a redacted message."""


def redacted_error(error: BaseException, secrets: Sequence[str]) -> BaseException | None:
    """A copy of `error` (same type where it can be rebuilt) without the secrets in its message, or
    None when its message holds none of them."""
    message = str(error)
    clean = redact(message, secrets)
    if clean == message:
        return None
    try:
        copy = type(error)(clean)
        if str(copy) != clean:
            raise TypeError
    except Exception:
        copy = RedactedError(f"{type(error).__name__}: {clean}")
    return copy


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
