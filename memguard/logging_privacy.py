"""Keep prompt text out of logs that diffusers writes during a guarded call.

diffusers' Stable Diffusion pipeline logs the truncated tail of any prompt longer than CLIP's 77
tokens, verbatim, at warning level. A filter on that logger keeps the warning and drops the text.
"""

from __future__ import annotations

import logging

_LOGGERS = ("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",)
_MARKER = "was truncated because CLIP"
REDACTED = (
    "part of a prompt was truncated because CLIP can only handle sequences up to 77 tokens (text redacted by memguard)"
)


class RedactTruncatedPrompt(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _MARKER in str(record.msg):
            record.msg, record.args = REDACTED, ()
        return True


def install() -> None:
    """Add the filter once per logger (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTruncatedPrompt) for f in logger.filters):
            logger.addFilter(RedactTruncatedPrompt())
