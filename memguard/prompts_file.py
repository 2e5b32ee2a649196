"""Prompt files for `memguard scan` and `memguard calibrate`: one prompt per line, or JSONL with a caption field.

Format: ``.jsonl``/``.ndjson`` files are JSONL; other files are JSONL when their first non-blank line
starts with ``{``, plain text otherwise. Blank lines are skipped in both. Errors name the file and
line but never quote the line: prompt logs may be private.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PromptFormat = Literal["auto", "lines", "jsonl"]
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file and line, not the content."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: its 0-based position among the file's prompts and its 1-based line in the file."""

    index: int
    line: int
    text: str


def read_prompts(path: str | os.PathLike, *, field: str = "caption", fmt: PromptFormat = "auto") -> list[Prompt]:
    """The prompts of `path`, in file order. Raises PromptFileError on a missing, empty or malformed file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PromptFileError(f"cannot read prompt file {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM from spreadsheet exports
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {err.start})") from None
    lines = [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1)]
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise PromptFileError(f"prompt file {path} has no prompts")
    if fmt == "auto":
        jsonl = path.suffix.lower() in JSONL_SUFFIXES or lines[0][1].lstrip().startswith("{")
        fmt = "jsonl" if jsonl else "lines"
    if fmt == "lines":
        return [Prompt(index, number, line) for index, (number, line) in enumerate(lines)]
    if fmt != "jsonl":
        raise ValueError(f"fmt must be 'auto', 'lines' or 'jsonl', got {fmt!r}")
    return [Prompt(index, number, _caption(path, number, line, field)) for index, (number, line) in enumerate(lines)]


def _caption(path: Path, number: int, line: str, field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{path}:{number}: not valid JSON (column {err.colno})") from None
    if not isinstance(record, dict):
        raise PromptFileError(f"{path}:{number}: expected a JSON object with a {field!r} field")
    if field not in record:
        raise PromptFileError(f"{path}:{number}: missing the {field!r} field")
    caption = record[field]
    if not isinstance(caption, str) or not caption.strip():
        raise PromptFileError(f"{path}:{number}: {field!r} must be a non-empty string")
    return caption


def prompts_digest(prompts: list[Prompt]) -> str:
    """A hash of the prompt list (text and order): a resumed scan checks it runs on the same prompts."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.text.encode())
        digest.update(b"\0")
    return digest.hexdigest()
