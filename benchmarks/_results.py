"""What the testbed benchmarks share when they report: the model's label, the provenance and the JSON file."""

from __future__ import annotations

import json
import math
import platform
from datetime import date
from pathlib import Path

import torch

from memguard.testbed import SHIPPED
from memguard.testbed import folder as testbed_folder


def model_label(model: str | Path) -> str:
    """ "testbed" / "testbed-xl" for the shipped weights, else the folder given with --model."""
    folder = testbed_folder(model)
    return next((name for name, path in SHIPPED.items() if folder == path), str(folder))


def _strict(value):
    """`value` as strict JSON can hold it: JSON has no NaN or infinity (`json.dumps` writes tokens that
    strict parsers refuse). A NaN here means "nothing to measure" (a rate over no images): None; an
    infinity (a threshold that lets everything through) the string "inf" or "-inf", which float() reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def provenance(script: str, model: str | Path) -> dict:
    """What every result file opens with: the script, the day, this machine's CPU and torch, the model."""
    return {
        "script": script,
        "date": date.today().isoformat(),
        "machine": f"CPU ({platform.machine()}), {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": model_label(model),
    }


def write_json(result: dict, out: Path, echo: bool = True) -> None:
    """Write `result` to `out` (its folder created) as strict JSON (`_strict`), printing it first when `echo`."""
    text = json.dumps(_strict(result), indent=1, allow_nan=False)
    if echo:
        print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


def plot_beside(out: Path, default_out: Path, default_plot: Path) -> Path:
    """Where a run writes its figure when no --plot is given: the default figure for the default --out;
    for another --out, beside it, named with what its name adds (detection_xl.json ->
    detection_roc_xl.png), so that a run on a second model or into a scratch folder never overwrites the
    figure the docs show."""
    if out.resolve() == default_out.resolve():
        return default_plot
    added = out.stem[len(default_out.stem) :] if out.stem.startswith(default_out.stem) else f"_{out.stem}"
    return out.parent / f"{default_plot.stem}{added}{default_plot.suffix}"
