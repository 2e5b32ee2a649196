"""What the CLI commands share: loading a guarded model, turning library errors into CLI errors,
finding image files. Kept out of cli.py so the command definitions stay readable."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
import torch
import typer

from .models import guard_defaults, load_pipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# --seed: image or prompt i uses seed + i, and torch seeds are 64-bit; 2**63 - 1 leaves room for
# 2**63 images above any seed, and is the largest seed other tools (numpy, JSON readers) keep exact.
SEED_MAX = 2**63 - 1


def finite(value: float | None) -> float | None:
    """A float option's callback: NaN and infinities are refused before anything runs (a NaN
    guidance would reach the model and the run file, where it never equals itself)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def fraction(value: float) -> float:
    """A rate option's callback: a finite number strictly between 0 and 1."""
    finite(value)
    if not 0.0 < value < 1.0:
        raise typer.BadParameter(f"must be strictly between 0 and 1, got {value}")
    return value


def make_folder(path: Path, param_hint: str) -> None:
    """Create the output folder now, so a bad path fails before any work, naming the option."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise typer.BadParameter(
            f"cannot create the folder {path}: {err.strerror or err}", param_hint=param_hint
        ) from None


@contextmanager
def user_errors(
    param_hint: str | None = None, kinds: tuple[type[BaseException], ...] = (ValueError,)
) -> Iterator[None]:
    """Report `kinds` raised inside as a CLI error (message, exit code != 0), not a traceback.

    Library messages are written not to contain prompt text, so they can be shown as they are.
    """
    try:
        yield
    except kinds as err:
        message = str(err).strip() or type(err).__name__  # never an empty error box
        if param_hint:
            raise typer.BadParameter(message, param_hint=param_hint) from None
        raise click.ClickException(message) from None


def default_device() -> str:
    """Every command's default: the accelerator when there is one."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def checked_device(value: str) -> str:
    """A --device option's callback: "auto" (the accelerator if any), or a device this torch can use,
    or one line saying why not."""
    if value == "auto":
        return default_device()
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(f"{value!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build"
                if torch.version.cuda is None
                else f"CUDA {torch.version.cuda}, but no GPU is visible"
            )
            raise typer.BadParameter(f"{value!r}: CUDA is not available here (torch {torch.__version__} is {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise typer.BadParameter(f"{value!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise typer.BadParameter(f"{value!r}: MPS is not available here")
    return value


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def guard_config(model: str, calibration: Path | None, registry: Path | None, detector: str | None = None, **changes):
    """A GuardConfig with the model's shipped files (the testbed's) unless the operator names others;
    each file and the detector checked on its own, so an error names the option at fault."""
    from .calibration import Calibration
    from .config import GuardConfig
    from .detection import get_detector
    from .intent.registry import as_registry

    defaults = guard_defaults(model)
    calibration_file, registry = calibration or defaults.calibration, registry or defaults.registry
    if detector is not None:
        with user_errors("'--detector'", (ValueError, TypeError)):
            get_detector(detector)
    with user_errors("'--calibration'", (ValueError, TypeError)):
        loaded = Calibration.load(calibration_file) if calibration_file is not None else None
    with user_errors("'--registry'", (ValueError, TypeError)):
        intents = as_registry(registry)
    with user_errors("'--calibration' / '--detector'", (ValueError, TypeError)):
        return GuardConfig(calibration=loaded, registry=intents, detector=detector, **changes), registry


def check_runnable(config, steps: int) -> None:
    """Refuse, before any model loads, a guard that cannot score these calls: a detector with no
    model-free threshold and no calibration, or a decision step beyond the steps run."""
    detector = config.effective_detector
    if config.calibration is None and config.threshold is None and detector.default_threshold is None:
        raise typer.BadParameter(
            f"detector {detector.name!r} has no model-free threshold: calibrate it "
            f"(memguard calibrate --detector {detector.name} ...) and pass --calibration",
            param_hint="'--detector'",
        )
    if config.effective_decision_step > steps:
        source = "the calibration's" if config.calibration is not None else "the detector's"
        raise typer.BadParameter(
            f"the guard decides at step {config.effective_decision_step} ({source} decision step), beyond "
            f"--steps {steps}: run at least that many steps",
            param_hint="'--steps'",
        )


def load_guarded(model: str, config, device: str, dtype: str = "float32", safety_checker: bool = True):
    """(GuardedStableDiffusionPipeline, description); a checked calibration is one measured on this model."""
    from .pipelines import guard

    with user_errors("'--model'", (OSError, ValueError)):
        pipe, name = load_pipeline(model, device=device, dtype=DTYPES[dtype], safety_checker=safety_checker)
    guarded = guard(pipe, config)
    needs = guarded.family.image_inputs
    if needs:
        raise typer.BadParameter(
            f"the command line runs text-to-image pipelines; {guarded.family.parent.__name__} also needs "
            f"{', '.join(needs)}, which no option passes: guard it from Python (memguard.guard)",
            param_hint="'--model'",
        )
    if config.calibration is not None:
        with user_errors("'--calibration'"):
            config.calibration.check_model(guarded)
    return guarded, name


def file_digest(path: Path | None) -> str | None:
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_files(paths: Sequence[Path], param_hint: str) -> list[Path]:
    """Image files named, or found (recursively, sorted) in folders named; an error if there are none."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist", param_hint=param_hint)
    if not found:
        raise typer.BadParameter(f"no images ({', '.join(IMAGE_SUFFIXES)}) found", param_hint=param_hint)
    return found
