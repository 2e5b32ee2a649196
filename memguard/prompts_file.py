"""Prompt files for `memguard scan` and `memguard calibrate`: one prompt per line, or JSONL with a caption field.

Format: ``.jsonl``/``.ndjson`` files are JSONL; any other file is JSONL when its first non-blank line
is a JSON object, plain text otherwise (so a first prompt in brace
syntax, "{masterpiece}, a cat", is a prompt). `fmt` (the CLI's --format) overrides the guess. Lines end
with LF, CRLF or a lone CR; blank lines are skipped in both formats. Errors name the file and
line but never quote the line: prompt logs may be private.

Limits (see docs/limits.md): a file of at most `MAX_FILE_BYTES` (1 GiB, some ten million logged
prompts; it is read whole, so a scan holds about three times that in memory at its peak), a line of
at most `MAX_LINE_CHARS` (1,048,576 characters; CLIP reads 77 tokens of a prompt), a JSONL record
nested at most 32 levels. An integer too long for Python in a field other than the prompt's is
ignored like any other field.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import MemguardTypeError, MemguardValueError
from .safe_parse import FileTooLarge, JsonSyntaxError, ParseError, cannot_open, parse_json, read_limited

PromptFormat = Literal["auto", "lines", "jsonl"]
JSONL_SUFFIXES = (".jsonl", ".ndjson")
MAX_FILE_BYTES = 1 << 30
MAX_LINE_CHARS = 1 << 20


class PromptFileError(MemguardValueError):
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
    if not isinstance(field, str):
        raise MemguardTypeError(f"read_prompts field must be a string, got {type(field).__name__}")
    if not field:
        raise MemguardValueError("read_prompts field is empty; name the JSONL field holding the prompt")
    if fmt not in ("auto", "lines", "jsonl"):
        raise MemguardValueError(f"read_prompts fmt must be 'auto', 'lines' or 'jsonl', got {fmt!r}")
    try:
        raw = read_limited(path, MAX_FILE_BYTES)
    except FileTooLarge as err:
        raise PromptFileError(f"prompt file {path}: {err}") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise PromptFileError(f"cannot read prompt file {path}: {cannot_open(err)}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM from spreadsheet exports
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {err.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and classic Mac line ends
    lines = list(enumerate(text.split("\n"), start=1))
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise PromptFileError(f"prompt file {path} has no prompts")
    for number, line in lines:
        if len(line) > MAX_LINE_CHARS:
            raise PromptFileError(f"{path}:{number}: longer than the {MAX_LINE_CHARS:,}-character limit for a line")
    if fmt == "auto":
        fmt = _guess_format(path, lines[0][1])
    if fmt == "lines":
        return [Prompt(index, number, line) for index, (number, line) in enumerate(lines)]
    return [Prompt(index, number, _caption(path, number, line, field)) for index, (number, line) in enumerate(lines)]


def _guess_format(path: Path, first_line: str) -> PromptFormat:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if not first_line.lstrip().startswith("{"):
        return "lines"
    try:
        return "jsonl" if isinstance(parse_json(first_line), dict) else "lines"
    except ParseError:
        return "lines"


def _caption(path: Path, number: int, line: str, field: str) -> str:
    try:
        record = parse_json(line)
    except JsonSyntaxError as err:
        raise PromptFileError(f"{path}:{number}: not valid JSON (column {err.column})") from None
    except ParseError as err:
        raise PromptFileError(f"{path}:{number}: {err.message}") from None
    if not isinstance(record, dict):
        raise PromptFileError(f"{path}:{number}: expected a JSON object with a {field!r} field")
    if field not in record:
        raise PromptFileError(f"{path}:{number}: missing the {field!r} field")
    caption = record[field]
    if not isinstance(caption, str) or not caption.strip():
        raise PromptFileError(f"{path}:{number}: {field!r} must be a non-empty string")
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError:  # a JSON escape of half a surrogate pair: no text a tokenizer or a hash can take
        raise PromptFileError(f"{path}:{number}: {field!r} holds an unpaired surrogate escape, not text") from None
    return caption


def prompts_digest(prompts: list[Prompt]) -> str:
    """A hash of the prompt list (text, order and line numbers, which the records carry): a resumed scan
    checks it runs on the same prompts at the same lines. Each text is length-prefixed, so no split of
    the same characters into other prompts hashes alike."""
    digest = hashlib.sha256()
    for prompt in prompts:
        text = prompt.text.encode()
        digest.update(f"{prompt.line}:{len(text)}:".encode())
        digest.update(text)
    return digest.hexdigest()
