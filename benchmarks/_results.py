"""What the testbed benchmarks share when they report: the model's label and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from memguard.testbed import MODEL_DIR


def model_label(model: Path) -> str:
    """ "testbed" for the shipped weights, else the folder given with --model."""
    return "testbed" if Path(model) == MODEL_DIR else str(model)


def write_json(result: dict, out: Path, echo: bool = True) -> None:
    """Write `result` to `out` (its folder created), printing it first when `echo`."""
    text = json.dumps(result, indent=1)
    if echo:
        print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
