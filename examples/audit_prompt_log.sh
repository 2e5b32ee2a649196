#!/usr/bin/env bash
# Offline audit of a prompt log with `memguard scan`: which logged prompts make the model reproduce
# training data? Scores each prompt at the decision step (no image is finished), then summarizes by
# verdict. The summary names file lines, never prompt text, so it can be shared.
#
#   examples/audit_prompt_log.sh [PROMPT_LOG] [OUT_DIR]
#
# PROMPT_LOG: one prompt per line, or JSONL with a "caption" field (default: examples/prompt_log.jsonl,
# a sample log for the shipped testbed model). OUT_DIR (default: audit/) gets scan.jsonl, its run file
# and summary.json. Re-running resumes an interrupted scan.
# Environment: MODEL (testbed | tiny | a diffusers id or path; default testbed), CALIBRATION (a file
# from `memguard calibrate`, needed for any model but the testbed), BATCH_SIZE (default 8),
# MEMGUARD (the command; default: the repository's .venv/bin/memguard where it exists, else "memguard"
# on PATH). On several GPUs:
#   MEMGUARD="accelerate launch --multi_gpu --num_processes 4 -m memguard.cli" examples/audit_prompt_log.sh log.jsonl
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=$(cd "$here/.." && pwd)/.venv/bin
if [ -x "$venv/memguard" ]; then default_memguard="$venv/memguard"; default_python="$venv/python"; else
    default_memguard=memguard; default_python=python3; fi
log=${1:-$here/prompt_log.jsonl}
out=${2:-audit}
mkdir -p "$out"

calibration=()
if [ -n "${CALIBRATION:-}" ]; then calibration=(--calibration "$CALIBRATION"); fi

# shellcheck disable=SC2086  # MEMGUARD may be a command with arguments
${MEMGUARD:-$default_memguard} scan "$log" --model "${MODEL:-testbed}" --out "$out/scan.jsonl" \
    --batch-size "${BATCH_SIZE:-8}" --no-progress "${calibration[@]}"

"${PYTHON:-$default_python}" - "$out/scan.jsonl" "$out/summary.json" <<'PY'
import collections
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
flagged = [r for r in rows if r["memorized"] and r["intent"] != "intended"]
summary = {
    "prompts": len(rows),
    "memorized": sum(r["memorized"] for r in rows),
    "by_intent": dict(collections.Counter(r["intent"] for r in rows)),
    # what needs a look: memorized, not (only) as an intended concept; file lines, not text
    "review_lines": sorted(r["line"] for r in flagged),
}
json.dump(summary, open(sys.argv[2], "w", encoding="utf-8"), indent=2)
print(json.dumps(summary))
PY
