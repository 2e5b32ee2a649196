"""What the testbed benchmarks share when they report: the model's label and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from memguard.testbed import SHIPPED
from memguard.testbed import folder as testbed_folder


def model_label(model: str | Path) -> str:
    """ "testbed" / "testbed-xl" for the shipped weights, else the folder given with --model."""
    folder = testbed_folder(model)
    return next((name for name, path in SHIPPED.items() if folder == path), str(folder))


def write_json(result: dict, out: Path, echo: bool = True) -> None:
    """Write `result` to `out` (its folder created), printing it first when `echo`."""
    text = json.dumps(result, indent=1)
    if echo:
        print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
