"""The `memguard` command line (typer): demo, generate, scan, calibrate, index build/check.

MODEL is "testbed" (the shipped model, offline; its calibration and registry apply unless others are
named), "tiny" (a random toy pipeline, for smoke runs) or a diffusers model id / local path.
Prompts are never printed; reports carry trigger offsets, and the text only with --include-text.

Options are checked before any model loads (see docs/limits.md): --seed is an integer in
0..2**63-1, every float option must be finite (a NaN guidance would otherwise reach the model and
a scan's run file), and an --out of the wrong kind (a file where a folder is written, or the
reverse) is refused naming --out.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from .cli_support import (
    SEED_MAX,
    check_runnable,
    checked_device,
    file_digest,
    finite,
    fraction,
    guard_config,
    image_files,
    load_guarded,
    make_folder,
    user_errors,
)
from .verify.specs import SPEC_HELP

app = typer.Typer(help="Guard diffusers text-to-image pipelines against unintended memorization.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"memguard {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """Guard diffusers text-to-image pipelines against unintended memorization."""


class DtypeChoice(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


# Options several commands share: one default and one meaning everywhere.
DEVICE = typer.Option("auto", callback=checked_device, help="torch device; auto: the accelerator if any, else cpu")
DTYPE = typer.Option(DtypeChoice.float32, help="weights' dtype (float16/bfloat16 on a GPU)")
SAFETY_CHECKER = typer.Option(
    True,
    "--safety-checker/--no-safety-checker",
    help="keep the model's own safety checker (diffusers' NSFW filter, when the model has one)",
)
DETECTOR = typer.Option(
    None, help="detector name (default: the calibration's; noise_rms without one), e.g. attention_noise"
)
PROGRESS = typer.Option(True, "--progress/--no-progress", help="show progress bars")


class FormatChoice(str, Enum):
    auto = "auto"
    lines = "lines"
    jsonl = "jsonl"


PROMPT_FORMAT = typer.Option(
    FormatChoice.auto,
    "--format",
    help="prompt files: auto (.jsonl/.ndjson: JSONL; else JSONL when the first line is a JSON object), lines or jsonl",
)
HISTOGRAM_SUFFIXES = (".png", ".svg", ".pdf")
index_app = typer.Typer(help="Copy-verification index of protected images (memguard.verify).", no_args_is_help=True)
app.add_typer(index_app, name="index")

MODEL_HELP = (
    "'testbed' (shipped, offline), 'testbed-xl' (its SDXL variant), 'tiny' (random toy model) "
    "or a diffusers model id / local path"
)


class PolicyChoice(str, Enum):
    flag = "flag"
    resample = "resample"
    block = "block"


class KindChoice(str, Enum):
    flat = "flat"
    ivf = "ivf"
    hnsw = "hnsw"


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), file_okay=False, help="folder for the grid picture and the JSON report"),
    steps: int = typer.Option(50, min=1, help="denoising steps"),
    model: str = typer.Option("testbed", help="'testbed' (SD architecture) or 'testbed-xl' (SDXL architecture)"),
    device: str = DEVICE,
) -> None:
    """Guard the shipped testbed model on a memorized, an intended, a mixed and a novel prompt."""
    from .demo import run_demo

    if model not in ("testbed", "testbed-xl"):
        raise typer.BadParameter("the demo runs 'testbed' or 'testbed-xl'", param_hint="'--model'")
    make_folder(out, "'--out'")  # before the two runs: a bad --out must not cost them
    result = run_demo(out, steps=steps, model=model, device=device)
    typer.echo(f"model: {result.model}")
    typer.echo(f"grid: {result.grid_path}")
    typer.echo(f"report: {result.report_path}")
    typer.echo(f"took {result.seconds:.1f} s")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="the prompt (never printed or logged)"),
    out: Path = typer.Option(..., "--out", file_okay=False, help="folder for image_NNN.png and image_NNN.json"),
    model: str = typer.Option("testbed", help=MODEL_HELP),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="image i uses seed + i (0..2**63-1)"),
    steps: int = typer.Option(50, min=1, help="denoising steps"),
    guidance: float = typer.Option(7.5, callback=finite, help="classifier-free guidance scale"),
    num_images: int = typer.Option(1, min=1, help="images of this prompt"),
    calibration: Path | None = typer.Option(None, help="calibration JSON (memguard calibrate)"),
    registry: Path | None = typer.Option(None, help="intent registry (JSON/YAML)"),
    policy: PolicyChoice = typer.Option(PolicyChoice.resample, help="action on unintended or mixed memorization"),
    include_text: bool = typer.Option(False, help="write the prompt and trigger words into the reports"),
    device: str = DEVICE,
    dtype: DtypeChoice = DTYPE,
    safety_checker: bool = SAFETY_CHECKER,
    detector: str | None = DETECTOR,
    progress: bool = PROGRESS,
) -> None:
    """Generate images under the guard; write each image and its memorization report."""
    import torch

    from .calibration import UNCOVERED
    from .policy import Policy

    if not prompt.strip():
        raise typer.BadParameter("the prompt is empty", param_hint="'PROMPT'")
    make_folder(out, "'--out'")  # before the model runs: a bad --out must not cost a generation
    config, _ = guard_config(model, calibration, registry, detector, policy=Policy.uniform(policy.value))
    check_runnable(config, steps)
    if config.calibration is None and policy.value != "flag":
        raise typer.BadParameter(
            f"--policy {policy.value} needs a calibration of this model (--calibration FILE, made with "
            f"`memguard calibrate --model {model}`); without one the guard only observes: use --policy flag",
            param_hint="'--policy'",
        )
    pipe, name = load_guarded(model, config, device, dtype.value, safety_checker)
    pipe.set_progress_bar_config(disable=not progress)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]
    with user_errors():
        output = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            num_images_per_prompt=num_images,
            generator=generators,
        )
    for i, (image, report) in enumerate(zip(output.images, output.memorization, strict=True)):
        stem = f"image_{i:03d}"
        image.save(out / f"{stem}.png")
        payload = {"model": name, "seed": seed + i, "steps": steps, "guidance_scale": guidance}
        if include_text:
            payload["prompt"] = prompt
        payload["report"] = report.to_dict(include_text=include_text)
        (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
        coverage = report.calibration_coverage
        uncovered = ""
        if coverage in UNCOVERED:
            uncovered = f"; the prompt is {coverage} than every calibration prompt"
        typer.echo(
            f"{stem}.png: {report.outcome} (score {report.score:.4f}, threshold {report.threshold:.4f}{uncovered})"
        )


@app.command()
def scan(
    prompts_file: Path = typer.Argument(..., help="one prompt per line, or JSONL with a caption field"),
    out: Path = typer.Option(Path("scan.jsonl"), "--out", dir_okay=False, help="JSONL results (resumed if it exists)"),
    model: str = typer.Option("testbed", help=MODEL_HELP),
    batch_size: int = typer.Option(8, min=1, help="prompts per pipeline call"),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="prompt i uses seed + i (0..2**63-1)"),
    steps: int = typer.Option(50, min=1, help="denoising steps of the schedule (scoring stops at the decision step)"),
    guidance: float = typer.Option(7.5, callback=finite, help="classifier-free guidance scale"),
    calibration: Path | None = typer.Option(None, help="calibration JSON (memguard calibrate)"),
    registry: Path | None = typer.Option(None, help="intent registry (JSON/YAML)"),
    field: str = typer.Option("caption", help="JSONL field holding the prompt"),
    prompt_format: FormatChoice = PROMPT_FORMAT,
    include_text: bool = typer.Option(False, help="write prompts and trigger words into the results"),
    cpu: bool = typer.Option(False, help="run on CPU even where an accelerator is available"),
    dtype: DtypeChoice = DTYPE,
    safety_checker: bool = SAFETY_CHECKER,
    detector: str | None = DETECTOR,
    progress: bool = PROGRESS,
) -> None:
    """Audit prompts: score each at the decision step, without finishing images (resumable).

    Runs sharded under `accelerate launch`; only the main process writes.
    """
    import torch
    from accelerate import PartialState

    from .calibration import model_fingerprint
    from .prompts_file import prompts_digest, read_prompts
    from .scan import ScanOutputError, run_scan

    with user_errors("'PROMPTS_FILE'"):
        prompts = read_prompts(prompts_file, field=field, fmt=prompt_format.value)
    config, registry_file = guard_config(model, calibration, registry, detector)
    check_runnable(config, steps)
    make_folder(out.parent, "'--out'")  # before the model loads
    # Without an accelerator accelerate must be told CPU, or a multi-process launch stays single-process.
    state = PartialState(cpu=cpu or not _accelerator_available(torch))
    pipe, _ = load_guarded(model, config, str(state.device), dtype.value, safety_checker)
    identity = {
        "prompts_sha256": prompts_digest(prompts),
        "model_fingerprint": model_fingerprint(pipe),  # the same in every dtype: the dtype is its own field
        "dtype": dtype.value,
        "calibration_threshold": config.calibration.threshold if config.calibration else None,
        "registry_sha256": file_digest(registry_file),
        "decision_step": config.effective_decision_step,
        "steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "batch_size": batch_size,  # a score depends a little on its batch: a resume scores the same batches
        "include_text": include_text,
    }
    with user_errors(), user_errors("'--out'", (ScanOutputError,)):  # a scoring error is no --out error
        summary = run_scan(
            pipe,
            prompts,
            out,
            identity=identity,
            batch_size=batch_size,
            seed=seed,
            include_text=include_text,
            state=state,
            progress=progress,
            num_inference_steps=steps,
            guidance_scale=guidance,
        )
    if state.is_main_process:
        unscored = f", {summary.unscored} without a score (see their status)" if summary.unscored else ""
        uncovered = (
            f", {summary.uncovered} shorter or longer than every calibration prompt (calibration_coverage)"
            if summary.uncovered
            else ""
        )
        typer.echo(
            f"{summary.total} prompts: {summary.resumed} already in {out}, {summary.scored} scored, "
            f"{summary.memorized} of them memorized{unscored}{uncovered}"
        )
    # Under a launcher, a process group left to the interpreter's exit can abort in gloo's teardown
    # ("terminate called without an active exception") after the work is done, failing the launch.
    state.destroy_process_group()


@app.command()
def calibrate(
    out: Path = typer.Option(Path("calibration.json"), "--out", dir_okay=False, help="calibration JSON to write"),
    model: str = typer.Option("testbed", help=MODEL_HELP),
    prompts_file: Path | None = typer.Option(
        None, "--prompts", dir_okay=False, help="your benign prompts: one per line, or JSONL with a caption field"
    ),
    prompt_log: Path | None = typer.Option(
        None, "--prompt-log", dir_okay=False, help="a production prompt log (JSONL, as scan reads) to sample from"
    ),
    num_prompts: int | None = typer.Option(
        None, min=1, help="prompts to take from the shipped corpus or the log (default: all of the corpus, 3000)"
    ),
    images_per_prompt: int = typer.Option(
        1, min=1, help="starting noises scored per prompt (its highest counts: more make the threshold stricter)"
    ),
    target_fpr: float = typer.Option(
        0.01, callback=fraction, help="false-positive rate on fresh benign prompts to stay under, in (0, 1)"
    ),
    confidence: float = typer.Option(
        0.95, callback=fraction, help="probability that the rate stays under the target, in (0, 1)"
    ),
    memorized: Path | None = typer.Option(
        None, dir_okay=False, help="known memorized prompts of this model: report the margin and TPR at the threshold"
    ),
    histogram: Path | None = typer.Option(
        None, dir_okay=False, help="PNG of the benign score distribution (default: OUT with .png)"
    ),
    steps: int = typer.Option(50, min=1, help="denoising steps of the schedule the guard will run with"),
    guidance: float = typer.Option(7.5, callback=finite, help="classifier-free guidance scale"),
    decision_step: int | None = typer.Option(
        None, min=1, help="1-based step at which the detector decides (default: the detector's own, else 1)"
    ),
    detector: str | None = typer.Option(None, help="detector to calibrate (default: top_layer_entropy)"),
    batch_size: int = typer.Option(8, min=1, help="prompts per pipeline call"),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="prompt i uses seed + i (0..2**63-1)"),
    field: str = typer.Option("caption", help="JSONL field holding the prompt"),
    prompt_format: FormatChoice = PROMPT_FORMAT,
    device: str = DEVICE,
    dtype: DtypeChoice = DTYPE,
    safety_checker: bool = SAFETY_CHECKER,
    progress: bool = PROGRESS,
) -> None:
    """Measure the threshold that keeps benign prompts of this model under a false-positive rate.

    Benign prompts: the shipped corpus (memguard/data/benign_prompts.txt) unless --prompts or
    --prompt-log names your own. Prints the threshold, its guarantee and the benign quantiles, and
    writes a histogram next to the calibration. Prompts are never printed.
    """
    from .calibrating import calibrate as measure
    from .calibration_summary import margin_report, save_histogram, summary_lines
    from .config import GuardConfig
    from .detection import CALIBRATED_DEFAULT, default_decision_step, get_detector
    from .prompts_corpus import benign_prompts, sample_prompt_log
    from .prompts_file import read_prompts
    from .thresholds import required_scores

    if prompts_file is not None and prompt_log is not None:
        raise typer.BadParameter("give --prompts or --prompt-log, not both", param_hint="'--prompt-log'")
    with user_errors("'--detector'", (ValueError, TypeError)):
        chosen = get_detector(detector if detector is not None else CALIBRATED_DEFAULT)  # what calibrate() runs
    if chosen.needs.full_run:
        raise typer.BadParameter(
            f"{chosen.name!r} scores only after the last step; the guard decides early", param_hint="'--detector'"
        )
    step = decision_step or default_decision_step(chosen)
    if step > steps:
        hint = "'--decision-step'" if decision_step else "'--steps'"
        raise typer.BadParameter(f"the detector decides at step {step}, beyond --steps {steps}", param_hint=hint)
    picture = histogram or out.with_suffix(".png")
    if picture.suffix.lower() not in HISTOGRAM_SUFFIXES:
        raise typer.BadParameter(
            f"{picture.name}: the histogram is written as {', '.join(HISTOGRAM_SUFFIXES)}", param_hint="'--histogram'"
        )
    if picture.resolve() == out.resolve():
        raise typer.BadParameter(
            f"{out.name} is where the histogram would go: name the calibration .json or pass --histogram",
            param_hint="'--out'",
        )
    make_folder(out.parent, "'--out'")  # before the scoring: a bad --out must not cost it
    make_folder(picture.parent, "'--histogram'")
    if prompts_file is not None:
        with user_errors("'--prompts'"):
            prompts = [p.text for p in read_prompts(prompts_file, field=field, fmt=prompt_format.value)]
        source = str(prompts_file)
    elif prompt_log is not None:
        with user_errors("'--prompt-log'"):
            sample = sample_prompt_log(prompt_log, num_prompts or 3000, seed=seed, field=field)
        prompts, source = list(sample.prompts), f"{prompt_log} ({sample.lines_read} lines read)"
    else:
        with user_errors("'--num-prompts'"):
            prompts, source = benign_prompts(limit=num_prompts), "the shipped benign corpus"
    needed, distinct = required_scores(target_fpr, confidence), len(set(prompts))
    if distinct < needed:  # the images of one prompt are not independent samples: prompts count, not images
        raise typer.BadParameter(
            f"--target-fpr {target_fpr:g} at --confidence {confidence:g} needs at least {needed} distinct benign "
            f"prompts, got {distinct}: pass more prompts (more --images-per-prompt do not count)",
            param_hint="'--target-fpr'",
        )
    known = None
    if memorized is not None:
        with user_errors("'--memorized'"):
            known = [p.text for p in read_prompts(memorized, field=field, fmt=prompt_format.value)]
    pipe, name = load_guarded(model, GuardConfig(), device, dtype.value, safety_checker)
    with user_errors():  # the options were checked above; what is left is the run's own (e.g. NaN scores)
        result = measure(
            pipe,
            prompts,
            target_fpr,
            confidence=confidence,
            decision_step=decision_step,
            detector=detector,
            num_images_per_prompt=images_per_prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
    result.save(out)
    margin = None
    if known:
        reports = pipe.score(
            known,
            config=GuardConfig(calibration=result),
            num_inference_steps=steps,
            guidance_scale=guidance,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        margin = margin_report(result, [r.score for r in reports])
    save_histogram(result, picture, memorized_scores=margin.scores if margin else None)
    typer.echo(f"{name}: {len(prompts)} benign prompts from {source}")
    for line in summary_lines(result, margin):
        typer.echo(line)
    typer.echo(f"calibration -> {out}; histogram -> {picture}")


@index_app.command("build")
def index_build(
    images_dir: Path = typer.Argument(..., help="folder of protected images (searched recursively)"),
    out: Path = typer.Option(
        ..., "--out", dir_okay=False, help="index file; its sidecar is written beside it as OUT.json"
    ),
    kind: KindChoice = typer.Option(KindChoice.flat, help="flat (exact), ivf or hnsw (approximate, for millions)"),
    encoder: str = typer.Option("pixel-32", help=SPEC_HELP),
    device: str = DEVICE,
    batch_size: int = typer.Option(32, min=1, help="images per encoder batch"),
    progress: bool = PROGRESS,
) -> None:
    """Index embeddings of protected or training images (ids: paths relative to IMAGES_DIR)."""
    from tqdm.auto import tqdm

    from .verify import VerificationIndex, encoder_from_name
    from .verify.index import check_indexable

    if not images_dir.is_dir():
        raise typer.BadParameter(f"{images_dir} is not a folder", param_hint="'IMAGES_DIR'")
    make_folder(out.parent, "'--out'")  # before the encoding: a bad --out must not cost it
    files = image_files([images_dir], "'IMAGES_DIR'")
    with user_errors("'--encoder'"):
        image_encoder = encoder_from_name(encoder, device=device, batch_size=batch_size)
        check_indexable(image_encoder)
    ids = [p.relative_to(images_dir).as_posix() for p in files]
    with user_errors("'IMAGES_DIR'"):
        index = VerificationIndex.build(
            tqdm(files, desc="memguard index", unit="image", disable=not progress),
            ids,
            image_encoder,
            kind=kind.value,
            batch_size=batch_size,
        )
    with user_errors("'--out'"):
        index.save(out)
    typer.echo(f"{len(index)} images, {kind.value} index, encoder {image_encoder.name} -> {out}")


@index_app.command("check")
def index_check(
    images: list[Path] = typer.Argument(..., help="generated images (files or folders) to check"),
    index_path: Path = typer.Option(..., "--index", help="index file written by `memguard index build`"),
    k: int = typer.Option(5, min=1, help="nearest protected images to list"),
    threshold: float | None = typer.Option(
        None,
        min=-1.0,
        max=1.0,
        callback=finite,
        help="mark an image copied when its top similarity (a cosine, -1 to 1) reaches this",
    ),
    encoder: str | None = typer.Option(
        None, help="the encoder the index was built with, where its spec no longer loads (a moved model folder)"
    ),
    device: str = DEVICE,
) -> None:
    """Print, per image, its nearest protected images and their cosine similarity (JSON lines)."""
    from .verify import VerificationIndex, encoder_from_name

    image_encoder = None
    if encoder is not None:
        with user_errors("'--encoder'"):
            image_encoder = encoder_from_name(encoder, device=device)
    with user_errors("'--index'"):
        index = VerificationIndex.load(index_path, image_encoder, device=device)
    files = image_files(images, "'IMAGES...'")
    with user_errors("'IMAGES...'"):
        checks = index.check(files, threshold if threshold is not None else 1.0, k)  # the guard's own rule
    for path, check in zip(files, checks, strict=True):
        row = {
            "image": str(path),
            "matches": [{"id": m.id, "similarity": round(m.similarity, 6)} for m in check.matches],
        }
        if threshold is not None:
            row["copied"] = check.copied
        typer.echo(json.dumps(row))


def _accelerator_available(torch) -> bool:
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


if __name__ == "__main__":
    app()
