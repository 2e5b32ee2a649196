"""Benign prompts for calibration: the corpus memguard ships, or a sample of a production prompt log.

A threshold is only as good as the benign prompts it was measured on. Operators who log their
service's prompts should calibrate on a sample of that log (`sample_prompt_log`); everyone else gets
the shipped corpus (`benign_prompts`), written by the project (memguard/data/BENIGN_PROMPTS.md says
how and what it is not).

Both pick subsets by ranking prompts on a seeded hash of their text, so a subset depends only on the
seed and the set of prompts, not on their order or on the Python version, and a larger `limit` or
`n` keeps every prompt a smaller one chose.

Limits on reading a log (see docs/limits.md): a line over 64 KiB is skipped unread, a JSONL record
nested past 32 levels or whose prompt is not text counts as malformed, and `max_lines` bounds a pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .prompts_file import JSONL_SUFFIXES, PromptFileError
from .safe_parse import ParseError, cannot_open, parse_json

__all__ = ["PromptLogSample", "benign_prompts", "normalize_prompt", "sample_prompt_log"]

CORPUS = "benign_prompts.txt"
MAX_PROMPT_CHARS = 400  # longer lines are pasted documents, not prompts (CLIP reads 77 tokens anyway)
_LINE_BYTES = 64 * 1024  # a log line longer than this is skipped unread, so one bad line cannot fill memory


def normalize_prompt(text: str) -> str:
    """The duplicate key: case and spacing do not make a new prompt."""
    return re.sub(r"\s*,\s*", ", ", " ".join(text.casefold().split())).strip()


def _rank(seed: int, key: str) -> bytes:
    """A prompt's place in the seeded order: a keyed hash of its normalized text (ties, one in 2^64,
    fall to the text)."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8, salt=seed.to_bytes(8, "little", signed=True)).digest()


@lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    text = resources.files("memguard").joinpath("data", CORPUS).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line.strip())


def benign_prompts(limit: int | None = None, seed: int = 0) -> list[str]:
    """The shipped benign prompts: all of them in file order, or `limit` of them chosen by `seed`.

    Raises ValueError when `limit` is below 1 or above the corpus size (a smaller calibration sample
    than asked for would quietly widen the threshold's error).
    """
    prompts = _corpus()
    if limit is None:
        return list(prompts)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= len(prompts):
        raise ValueError(f"limit must be an integer from 1 to {len(prompts)} (the corpus size), got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    keys = {p: normalize_prompt(p) for p in prompts}
    return sorted(prompts, key=lambda p: (_rank(seed, keys[p]), keys[p]))[:limit]


@dataclasses.dataclass(frozen=True)
class PromptLogSample:
    """Prompts sampled from a log, and what was left out on the way (counts only: logs are private)."""

    prompts: tuple[str, ...] = dataclasses.field(repr=False)
    lines_read: int  # non-blank lines looked at
    malformed: int  # not UTF-8, not JSON (or nested past 32 levels), or without the prompt field (JSONL)
    overlong: int  # over max_chars characters (or a line over 64 KiB)
    excluded: int  # lines whose prompt was in `exclude`
    truncated: bool  # stopped at max_lines before the end of the file


def sample_prompt_log(
    path: str | os.PathLike,
    n: int,
    seed: int = 0,
    *,
    exclude: Iterable[str] = (),
    field: str = "caption",
    max_chars: int = MAX_PROMPT_CHARS,
    max_lines: int | None = None,
) -> PromptLogSample:
    """Sample up to `n` distinct prompts from a prompt log, in one pass with memory for `n` prompts.

    The log is what `memguard scan` reads: JSONL with the prompt under `field` (a `.jsonl`/`.ndjson`
    file, or one whose first non-blank line starts with `{`), or one prompt per line. Prompts are
    compared after `normalize_prompt` (so repeats count once), stripped of surrounding and repeated
    whitespace, and kept when they are at most `max_chars` long and not in `exclude` (say, prompts
    known to be memorized, or those a scan flagged). Lines that cannot be read are counted, not
    raised: a production log may hold a few broken lines. `max_lines` bounds the time on a huge log.

    Returns fewer than `n` prompts when the log holds fewer distinct ones; the caller decides
    whether that is enough (calibration checks its sample size). Raises PromptFileError when the file
    cannot be read or yields no prompt at all.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if max_lines is not None and (isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 1):
        raise ValueError(f"max_lines must be a positive integer or None, got {max_lines!r}")
    if isinstance(exclude, str):
        raise TypeError("exclude must be a collection of prompts, not one string")
    path = Path(path)
    counts = {"lines_read": 0, "malformed": 0, "overlong": 0, "excluded": 0, "truncated": False}
    usable = _usable_prompts(path, field, max_chars, max_lines, {normalize_prompt(t) for t in exclude}, counts)
    # Bottom-n by seeded hash: the n distinct prompts of smallest rank, whatever the order of the log.
    # The heap holds negated ranks so its top is the largest rank kept, the first to give way.
    heap: list[tuple[bytes, str, str]] = []
    kept: set[str] = set()
    for key, text in usable:
        if key in kept:
            continue
        entry = (_negate(_rank(seed, key)), key, text)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:  # a smaller rank than the largest kept
            kept.discard(heapq.heapreplace(heap, entry)[1])
        else:
            continue
        kept.add(key)
    if not heap:
        raise PromptFileError(
            f"prompt log {path} has no usable prompts ({counts['lines_read']} lines read, {counts['malformed']} "
            f"malformed, {counts['overlong']} over {max_chars} characters, {counts['excluded']} excluded)"
        )
    chosen = sorted(heap, reverse=True)  # smallest rank first
    return PromptLogSample(prompts=tuple(text for _, _, text in chosen), **counts)


def _usable_prompts(
    path: Path, field: str, max_chars: int, max_lines: int | None, excluded_keys: set[str], counts: dict
) -> Iterator[tuple[str, str]]:
    """(duplicate key, prompt) for each usable line of the log, in file order; what is skipped is
    counted in `counts`."""
    try:
        with path.open("rb") as stream:
            jsonl = None
            for raw in _lines(stream):
                if raw is not None and not raw.strip():
                    continue
                if max_lines is not None and counts["lines_read"] >= max_lines:
                    counts["truncated"] = True
                    return
                counts["lines_read"] += 1
                if raw is None:  # a line too long to read
                    counts["overlong"] += 1
                    continue
                if counts["lines_read"] == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM from spreadsheet exports
                if jsonl is None:
                    jsonl = path.suffix.lower() in JSONL_SUFFIXES or raw.lstrip().startswith(b"{")
                text = _prompt_of(raw, jsonl, field)
                if text is None:
                    counts["malformed"] += 1
                    continue
                text = " ".join(text.split())
                key = normalize_prompt(text)
                if len(text) > max_chars:
                    counts["overlong"] += 1
                elif key in excluded_keys:
                    counts["excluded"] += 1
                else:
                    yield key, text
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise PromptFileError(f"cannot read prompt log {path}: {cannot_open(err)}") from None


def _negate(digest: bytes) -> bytes:
    return bytes(255 - b for b in digest)


def _lines(stream) -> Iterable[bytes | None]:
    """The file's lines, without their ends; None for a line longer than _LINE_BYTES (skipped unread)."""
    while True:
        line = stream.readline(_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > _LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the long line
                line = stream.readline(_LINE_BYTES)
            yield None
            continue
        yield line.rstrip(b"\r\n")


def _prompt_of(raw: bytes, jsonl: bool, field: str) -> str | None:
    """The prompt of one line, or None when the line is not one (the caller counts it)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not jsonl:
        return line if line.strip() else None
    try:
        record = parse_json(line)  # a line nested past 32 levels is malformed, not a RecursionError
    except ParseError:
        return None
    value = record.get(field) if isinstance(record, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a JSON escape of half a surrogate pair: not text
        return None
    return value
