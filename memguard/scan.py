"""`memguard scan`: audit many prompts at the decision step (images are never finished), resumably,
on one process or many under `accelerate launch`.

Output: JSONL, one record per prompt in prompt order, plus a sidecar ``<out>.meta.json`` naming the
run (prompt-list hash, model fingerprint, settings). A restarted scan checks the sidecar matches,
keeps the records already written (by index) and appends the rest.

Distribution: prompts are cut into batches of `batch_size` on a fixed grid (prompt i is in batch
i // batch_size, whatever the number of processes and wherever a run stopped: a score depends a
little on what else is in its batch, so a resumed or re-sharded scan scores every batch as the
uninterrupted run did, re-scoring a batch a crash left half written and keeping the records it lacks);
each round hands one batch to each process with accelerate's `split_between_processes`,
`gather_object` brings the records back in order and only the main process writes.

Limits on reading a run back (see docs/limits.md): the sidecar is at most `MAX_META_BYTES` (1 MiB)
and nested at most 32 levels; a record line is at most `MAX_RECORD_BYTES` (16 MiB: a record with the
longest prompt line, 1 Mi characters, twice (the prompt and its trigger spans), JSON-escaped, non-ASCII
written as UTF-8). Records are read one line at a time, so
resuming holds one record in memory, not the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .calibration import UNCOVERED
from .errors import MemguardValueError
from .prompts_file import Prompt
from .safe_parse import FileTooLarge, ParseError, parse_json, read_limited

META_VERSION = 2  # 2: the prompt digest covers line numbers; batch_size is part of the run
MAX_META_BYTES = 1 << 20
MAX_RECORD_BYTES = 32 << 20


class ScanOutputError(MemguardValueError):
    """The output file cannot be resumed (another run's, or damaged)."""


@dataclass(frozen=True)
class ScanSummary:
    total: int  # prompts in the input
    resumed: int  # records already in the output file, kept
    scored: int  # prompts this run wrote a record for
    memorized: int  # of those, scored as memorized
    unscored: int = 0  # of those, with no score: the guard failed on them (status "error") or had no signal
    uncovered: int = 0  # of those, shorter or longer than every prompt of the calibration in force


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def record(prompt: Prompt, report, include_text: bool) -> dict:
    """One output line: verdict and trigger spans (character offsets); the prompt only if asked."""
    data = report.to_dict(include_text=include_text)
    row = {
        "index": prompt.index,
        "line": prompt.line,
        "score": data["score"],
        "threshold": data["threshold"],
        "memorized": data["memorized"],
        "intent": data["intent"],
        "triggers": data["triggers"],
        "status": data["status"],
        "decided_at_step": data["decided_at_step"],
        "threshold_source": data["threshold_source"],
        "calibration_coverage": data["calibration_coverage"],
    }
    if include_text:
        row["prompt"] = prompt.text
    return row


def record_line(row: dict) -> str:
    """A record as the output file holds it: one line of JSON, non-ASCII text as UTF-8 (escaped, an
    emoji would take 12 bytes, and a record could outgrow what a resume reads back)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def prepare_output(out: Path, identity: dict, num_prompts: int) -> list[int]:
    """Check or start the output file; return the prompt indices still to score (ascending)."""
    meta = {"format_version": META_VERSION, **identity, "num_prompts": num_prompts}
    for key, value in meta.items():
        # JSON has no NaN: one written as a bare NaN reads back unequal to itself, so no run could resume
        if isinstance(value, float) and not math.isfinite(value):
            raise ScanOutputError(f"scan setting {key} must be a finite number, got {value}")
    sidecar = meta_path(out)
    if not out.exists() or out.stat().st_size == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
        sidecar.write_text(json.dumps(meta, indent=2) + "\n")
        return list(range(num_prompts))
    try:
        previous = parse_json(read_limited(sidecar, MAX_META_BYTES).decode("utf-8"))
    except (OSError, ValueError, FileTooLarge, ParseError):  # ValueError: not UTF-8
        previous = None
    if not isinstance(previous, dict):
        raise ScanOutputError(
            f"{out} exists but its run file {sidecar.name} is missing or unreadable, so a resume cannot be "
            "verified; delete the output or choose another --out"
        )
    differing = sorted(map(str, (k for k in set(meta) | set(previous) if meta.get(k) != previous.get(k))))
    if differing:
        raise ScanOutputError(
            f"{out} was written by another scan (differs in: {', '.join(differing)}); "
            "delete it or choose another --out to start over"
        )
    return [i for i in range(num_prompts) if i not in _done_indices(out, num_prompts)]


def _done_indices(out: Path, num_prompts: int) -> set[int]:
    """The indices of the complete records of `out`, read one line at a time; a last line cut short
    by a crash is dropped from the file."""
    done: set[int] = set()
    with open(out, "r+b") as file:
        complete, number = 0, 0  # bytes of complete records; line number
        while line := file.readline(MAX_RECORD_BYTES + 1):
            number += 1
            if len(line) > MAX_RECORD_BYTES:
                raise ScanOutputError(f"{out}:{number}: longer than {MAX_RECORD_BYTES:,} bytes, not a scan record")
            if not line.endswith(b"\n"):  # a write cut short by a crash: drop the partial last record
                file.truncate(complete)
                break
            complete += len(line)
            try:
                index = parse_json(line.decode("utf-8"))["index"]
            except (ParseError, ValueError, KeyError, TypeError):  # ValueError: not UTF-8
                raise ScanOutputError(f"{out}:{number}: not a scan record; cannot resume") from None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_prompts or index in done:
                raise ScanOutputError(f"{out}:{number}: bad or repeated prompt index; cannot resume")
            done.add(index)
    return done


def batches(indices: Sequence[int], batch_size: int, num_prompts: int) -> list[list[int]]:
    """The batches of the fixed grid (prompt i in batch i // batch_size) that hold any of `indices`,
    each whole: the scores of a batch are those of the uninterrupted run."""
    starts = sorted({index // batch_size * batch_size for index in indices})
    return [list(range(start, min(start + batch_size, num_prompts))) for start in starts]


def run_scan(
    pipe,
    prompts: Sequence[Prompt],
    out: Path,
    *,
    identity: dict,
    config=None,
    batch_size: int = 8,
    seed: int = 0,
    include_text: bool = False,
    state=None,
    progress: bool = True,
    **call_kwargs,
) -> ScanSummary:
    """Score `prompts` with `pipe.score` and append their records to `out` (see the module docstring).

    `state` is an `accelerate.PartialState` (default: a fresh one; single-process outside a launcher).
    Image i is seeded with `seed + i`, so a record is the same however the work is split.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    state = state or PartialState()
    distributed = state.num_processes > 1
    plan: list = [None]
    if state.is_main_process:
        try:
            plan = [("ok", prepare_output(out, identity, len(prompts)))]
        except ScanOutputError as err:
            plan = [("error", str(err))]
    if distributed:
        broadcast_object_list(plan)  # every process must learn of a refusal, or the others would hang
    status, pending = plan[0]
    if status == "error":
        raise ScanOutputError(pending)
    work = batches(pending, batch_size, len(prompts))
    wanted = set(pending)  # a batch re-scored for the records a crash cut keeps only those
    scored = memorized = unscored = uncovered = 0
    bar = tqdm(
        total=len(pending), desc="memguard scan", unit="prompt", disable=not (progress and state.is_main_process)
    )
    with open(out, "a", encoding="utf-8") if state.is_main_process else nullcontext() as sink, bar:
        for start in range(0, len(work), state.num_processes):
            with state.split_between_processes(work[start : start + state.num_processes]) as mine:
                local = [
                    row
                    for batch in mine
                    for row in _score(pipe, prompts, batch, config, seed, include_text, call_kwargs)
                    if row["index"] in wanted
                ]
            rows = gather_object(local) if distributed else local
            if sink is not None:
                sink.writelines(map(record_line, rows))
                sink.flush()
                os.fsync(sink.fileno())  # a killed scan resumes after the last complete round
            scored += len(rows)
            memorized += sum(bool(row["memorized"]) for row in rows)
            unscored += sum(row["status"] != "checked" for row in rows)
            uncovered += sum(row["calibration_coverage"] in UNCOVERED for row in rows)
            bar.update(len(rows))
    return ScanSummary(len(prompts), len(prompts) - len(pending), scored, memorized, unscored, uncovered)


def _score(pipe, prompts, batch: list[int], config, seed: int, include_text: bool, call_kwargs: dict) -> list[dict]:
    chosen = [prompts[i] for i in batch]
    reports = pipe.score(
        [p.text for p in chosen],
        config=config,
        batch_size=len(chosen),
        seed=seed + batch[0],
        progress=False,
        **call_kwargs,
    )
    return [record(p, r, include_text) for p, r in zip(chosen, reports, strict=True)]
