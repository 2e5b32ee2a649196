"""`memguard generate | scan | calibrate | index` end to end, errors included."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from memguard import Calibration, testbed
from memguard.cli import app

SECRET = "Zyxwv Private Diary Page Of Jane Q. Example"
TRUTH = testbed.MODEL_DIR / "truth"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def said(message: str, output: str) -> bool:
    """`message` is in the output, whatever rich's error box did to line breaks."""
    squeeze = "".join(ch for ch in output if not ch.isspace() and ch not in "│╭╮╰╯─")
    return "".join(message.split()) in squeeze


@pytest.fixture(scope="module")
def truth():
    return testbed.load_truth(TRUTH)


@pytest.fixture
def prompt_file(tmp_path, truth):
    """Memorized captions and novel scenes, with a blank line (skipped) and the secret."""
    lines = [truth.memorized_prompts["m01"], truth.novel[0], "", truth.memorized_prompts["m02"], SECRET, truth.novel[1]]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_generate_writes_images_and_reports_without_the_prompt(tmp_path, truth):
    out = tmp_path / "gen"
    result = run("generate", truth.memorized_prompts["m01"], "--out", out, "--policy", "block", "--num-images", 2)
    assert result.exit_code == 0, result.output
    reports = [json.loads((out / f"image_00{i}.json").read_text()) for i in range(2)]
    assert [r["seed"] for r in reports] == [0, 1] and all(r["model"] == "memguard testbed" for r in reports)
    assert all(r["report"]["action"] == "blocked" and r["report"]["threshold_source"] == "calibration" for r in reports)
    assert all(r["report"]["triggers"] and "text" not in r["report"]["triggers"][0] for r in reports)
    assert "prompt" not in reports[0]
    image = np.asarray(Image.open(out / "image_000.png"))
    assert image.shape == (32, 32, 3) and image.max() == 0  # blocked: the placeholder, not the copy
    assert truth.memorized_prompts["m01"] not in result.output + (out / "image_000.json").read_text()


def test_generate_flags_with_include_text_and_honours_seed(tmp_path, truth):
    prompt = truth.memorized_prompts["m01"]
    for name, seed in (("a", 3), ("b", 3)):
        result = run("generate", prompt, "--out", tmp_path / name, "--policy", "flag", "--seed", seed, "--include-text")
        assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "a" / "image_000.json").read_text())
    assert payload["prompt"] == prompt and payload["report"]["action"] == "flagged"
    span = payload["report"]["triggers"][0]
    assert span["text"] == prompt[span["start"] : span["end"]]
    same = [np.asarray(Image.open(tmp_path / d / "image_000.png")) for d in "ab"]
    assert np.array_equal(*same) and same[0].max() > 0  # flagged: the image itself, reproducible by seed


def _scan(prompts, out, *extra, env=None, launcher=()):
    """Run `memguard scan` in a fresh process (one thread, so runs are bit-comparable)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    command = [*launcher, "-m", "memguard.cli", "scan", str(prompts), "--out", str(out), "--batch-size", "2"]
    command = [sys.executable, *command] if not launcher else command
    result = subprocess.run([*command, "--no-progress", *extra], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_scan_two_processes_under_accelerate_equal_one_process_in_order(tmp_path, prompt_file):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "accelerate's launcher is installed with memguard"
    single, double = tmp_path / "single.jsonl", tmp_path / "double.jsonl"
    _scan(prompt_file, single)
    # --multi_gpu picks accelerate's torchrun launcher; with no GPU memguard runs the processes on CPU (gloo)
    launched = _scan(prompt_file, double, launcher=(accelerate, "launch", "--multi_gpu", "--num_processes", "2"))
    assert "5 prompts: 0 already in" in launched.stdout  # the summary: main process only, once
    assert launched.stdout.count("prompts:") == 1
    rows = [json.loads(line) for line in single.read_text().splitlines()]
    # same records in the same order; scores may differ in the last bits (each process has its own threads)
    doubled = [json.loads(line) for line in double.read_text().splitlines()]
    assert [(r["index"], r["memorized"], r["intent"]) for r in doubled] == [
        (r["index"], r["memorized"], r["intent"]) for r in rows
    ]
    assert [r["score"] for r in doubled] == pytest.approx([r["score"] for r in rows], rel=1e-5)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4] and [r["line"] for r in rows] == [1, 2, 4, 5, 6]
    assert rows[0]["memorized"] and rows[2]["memorized"]  # the testbed's memorized captions m01, m02
    assert not rows[1]["memorized"] and rows[0]["triggers"] and "text" not in rows[0]["triggers"][0]
    assert SECRET not in single.read_text() + launched.stdout + launched.stderr


def test_scan_resumes_where_it_stopped_and_refuses_another_runs_output(tmp_path, prompt_file):
    out = tmp_path / "scan.jsonl"
    result = run("scan", prompt_file, "--out", out, "--batch-size", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    # killed mid-write: three records and a half, the third the first half of the batch [2, 3]
    out.write_text("".join(lines[:3]) + lines[3][:15])
    result = run("scan", prompt_file, "--out", out, "--batch-size", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "5 prompts: 3 already in" in result.output and "2 scored" in result.output
    assert out.read_text() == full  # every batch scored as the uninterrupted run scored it: the same bytes
    result = run("scan", prompt_file, "--out", out, "--batch-size", 3, "--no-progress")
    assert result.exit_code == 2 and said("differs in: batch_size", result.output)
    moved = tmp_path / "moved.txt"  # the same prompts at other lines: the records' line numbers would be stale
    moved.write_text("\n" + prompt_file.read_text())
    result = run("scan", moved, "--out", out, "--batch-size", 2, "--no-progress")
    assert result.exit_code == 2 and said("differs in: prompts_sha256", result.output)

    other = tmp_path / "other.txt"
    other.write_text(prompt_file.read_text() + "one more prompt\n")
    result = run("scan", other, "--out", out, "--batch-size", 2, "--no-progress")
    assert result.exit_code != 0 and said("another scan (differs in: num_prompts, prompts_sha256)", result.output)
    result = run("scan", prompt_file, "--out", out, "--batch-size", 2, "--seed", 5, "--no-progress")
    assert result.exit_code != 0 and said("differs in: seed", result.output)
    # the model's fingerprint is the same in every dtype, so the dtype is a setting of its own
    result = run("scan", prompt_file, "--out", out, "--batch-size", 2, "--dtype", "bfloat16", "--no-progress")
    assert result.exit_code == 2 and said("'--out': ", result.output) and said("differs in: dtype", result.output)


def test_the_command_line_refuses_a_pipeline_that_needs_an_image_naming_model(tmp_path):
    from memguard.testbed.tiny import tiny_family_pipeline

    folder = tmp_path / "img2img"
    tiny_family_pipeline("stable-diffusion-img2img").save_pretrained(folder)
    result = run("generate", SECRET, "--model", folder, "--policy", "flag", "--out", tmp_path / "out")
    assert result.exit_code == 2 and said("Invalid value for '--model'", result.output)
    assert said("StableDiffusionImg2ImgPipeline also needs image", result.output) and SECRET not in result.output


def test_scan_with_include_text_writes_prompts(tmp_path, prompt_file):
    out = tmp_path / "scan.jsonl"
    result = run("scan", prompt_file, "--out", out, "--model", "tiny", "--include-text", "--no-progress")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[3]["prompt"] == SECRET and rows[3]["threshold_source"] == "default"


def test_scan_counts_prompts_outside_the_calibrations_lengths(tmp_path, truth):
    path = tmp_path / "prompts.txt"
    long = ", ".join(truth.novel[:3])  # three captions in one prompt: longer than any calibration prompt
    path.write_text("\n".join(["zorblax", truth.novel[0], long]) + "\n")
    out = tmp_path / "scan.jsonl"
    result = run("scan", path, "--out", out, "--no-progress")  # the testbed, with its shipped calibration
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["calibration_coverage"] for r in rows] == ["shorter", "covered", "longer"]
    assert "2 shorter or longer than every calibration prompt" in result.output and "zorblax" not in result.output


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "cannot read prompt file"),
        ("\n\n", "has no prompts"),
        ('{"caption": "fine"}\n{"text": "' + SECRET + '"}\n', "prompts.jsonl:2: missing the 'caption' field"),
    ],
)
def test_scan_and_calibrate_reject_bad_prompt_files(tmp_path, body, message):
    path = tmp_path / "prompts.jsonl"
    if body is not None:
        path.write_text(body)
    for command in (("scan", path), ("calibrate", "--prompts", path)):
        result = run(*command, "--model", "tiny", "--out", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert said(message, result.output) and SECRET not in result.output


def test_calibrate_then_generate_with_that_calibration(tmp_path):
    benign = tmp_path / "benign.txt"
    benign.write_text("\n".join(f"a plain picture number {i}" for i in range(30)) + "\n")
    calibration_file = tmp_path / "calib.json"
    known = tmp_path / "known.txt"
    known.write_text("a plain picture number 3\nsomething else entirely\n")
    result = run(
        "calibrate", "--prompts", benign, "--model", "tiny", "--target-fpr", 0.1, "--images-per-prompt", 2,
        "--out", calibration_file, "--steps", 10, "--memorized", known, "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    calibration = Calibration.load(calibration_file)
    assert calibration.num_scores == 30  # one sample per distinct prompt, whatever --images-per-prompt
    assert calibration.target_fpr == 0.1 and calibration.num_inference_steps == 10
    assert f"threshold {calibration.threshold:.6g}" in result.output and "probability 0.9" in result.output
    assert "benign quantiles: min" in result.output and "known memorized prompts:" in result.output
    assert "threshold spread: another 30 prompts like these would put it in" in result.output
    above = round(calibration.achieved_fpr * 30)
    assert f"benign scores above it: {above} of 30 ({calibration.achieved_fpr:.4f})" in result.output
    assert calibration_file.with_suffix(".png").stat().st_size > 1000  # the histogram
    assert "number 3" not in result.output  # prompts are never printed
    shortest, longest = calibration.prompt_tokens
    assert shortest >= 5 and f"benign prompts {shortest}-{longest} tokens long" in result.output

    out = tmp_path / "gen"
    result = run(
        "generate", "a plain picture", "--model", "tiny", "--out", out, "--steps", 10, "--calibration", calibration_file
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "image_000.json").read_text())["report"]
    assert report["threshold"] == calibration.threshold and report["threshold_source"] == "calibration"
    assert report["calibration_coverage"] == "shorter"  # three words, against five or more
    assert "the prompt is shorter than every calibration prompt" in result.output

    result = run("generate", "a plain picture", "--out", out, "--calibration", calibration_file)  # on the testbed
    assert result.exit_code == 2 and said("measured on another model", result.output)
    result = run(
        "calibrate", "--prompts", benign, "--model", "tiny", "--target-fpr", 0.01, "--out", tmp_path / "c2.json"
    )
    assert result.exit_code == 2 and said("needs at least 299 distinct benign prompts, got 30", result.output)
    result = run(  # images of one prompt are not independent samples: they never make up the count
        "calibrate", "--prompts", benign, "--model", "tiny", "--target-fpr", 0.01, "--images-per-prompt", 10,
        "--out", tmp_path / "c3.json",
    )  # fmt: skip
    assert result.exit_code == 2 and said("needs at least 299 distinct benign prompts, got 30", result.output)


def test_index_build_and_check(tmp_path):
    images = tmp_path / "protected"
    (images / "sub").mkdir(parents=True)
    for name in ("m01_0.png", "m02_0.png", "r01_0.png"):
        shutil.copy(TRUTH / name, images / name)
    shutil.copy(TRUTH / "t01_0.png", images / "sub" / "t01_0.png")
    index = tmp_path / "protected.faiss"
    result = run("index", "build", images, "--out", index, "--kind", "hnsw")
    assert result.exit_code == 0, result.output
    assert "4 images, hnsw index, encoder pixel-32" in result.output
    assert json.loads((tmp_path / "protected.faiss.json").read_text())["ids"] == [
        "m01_0.png",
        "m02_0.png",
        "r01_0.png",
        "sub/t01_0.png",
    ]
    novel = tmp_path / "novel.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(novel)
    result = run("index", "check", TRUTH / "m02_0.png", novel, "--index", index, "--k", 2, "--threshold", 0.9)
    assert result.exit_code == 0, result.output
    copy, fresh = [json.loads(line) for line in result.output.splitlines()]
    assert copy["matches"][0]["id"] == "m02_0.png" and copy["matches"][0]["similarity"] == pytest.approx(1, abs=1e-4)
    assert len(copy["matches"]) == 2 and copy["copied"] is True
    assert fresh["copied"] is False and fresh["matches"][0]["similarity"] < 0.5


def test_index_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("index", "build", tmp_path / "empty", "--out", tmp_path / "i.faiss")
    assert result.exit_code == 2 and said("no images", result.output)
    result = run("index", "build", tmp_path / "missing", "--out", tmp_path / "i.faiss")
    assert result.exit_code == 2 and said("is not a folder", result.output)
    result = run("index", "build", TRUTH, "--out", tmp_path / "i.faiss", "--encoder", "sscd")
    assert result.exit_code == 2 and said("unknown encoder", result.output)
    result = run("index", "check", TRUTH / "m01_0.png", "--index", tmp_path / "i.faiss")
    assert result.exit_code == 2 and said("not found", result.output)


def test_version_device_and_dtype_options():
    from memguard import __version__

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"memguard {__version__}"
    if not torch.cuda.is_available():
        result = run("generate", "a plain picture", "--model", "tiny", "--out", "unused", "--device", "cuda")
        assert result.exit_code == 2 and said("CUDA is not available here", result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 6
    result = run("calibrate", "--model", "tiny", "--device", "tpu9")
    assert result.exit_code == 2 and said("is not a torch device", result.output)
    result = run("generate", "a plain picture", "--model", "tiny", "--out", "unused", "--dtype", "float8")
    assert result.exit_code == 2 and said("float8", result.output)


def test_generate_in_bfloat16_with_a_detector_and_without_progress(tmp_path):
    out = tmp_path / "gen"
    result = run(
        "generate", "a plain picture", "--model", "tiny", "--out", out, "--steps", 2, "--dtype", "bfloat16",
        "--detector", "noise_rms", "--no-progress", "--seed", 3, "--policy", "flag",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "image_000.json").read_text())["report"]
    assert report["detector"] == "noise_rms" and report["outcome"] in ("clean", "observed")
    # without a calibration the guard only observes, so a policy that acts is refused, saying why
    for policy in ("resample", "block"):
        result = run("generate", "a plain picture", "--model", "tiny", "--out", out, "--policy", policy)
        assert result.exit_code == 2 and said("needs a calibration of this model", result.output)


def test_a_scan_counts_the_prompts_the_guard_could_not_score(tmp_path):
    from dataclasses import dataclass

    from accelerate import PartialState

    import memguard
    from memguard.detection.noise import NoiseMagnitudeDetector
    from memguard.prompts_file import Prompt
    from memguard.scan import run_scan
    from memguard.testbed.tiny import tiny_pipeline

    @dataclass(frozen=True)
    class Broken(NoiseMagnitudeDetector):  # signals read, but the score comes out NaN (an fp16 overflow, say)
        name: str = "broken"

        def score(self, trace, upto_step):
            return super().score(trace, upto_step) * float("nan")

    pipe = memguard.guard(tiny_pipeline(), memguard.GuardConfig(detector=Broken(), threshold=0.1))
    prompts = [Prompt(i, i + 1, text) for i, text in enumerate(["one", "two", "three"])]
    out = tmp_path / "scan.jsonl"
    summary = run_scan(
        pipe, prompts, out, identity={}, state=PartialState(cpu=True), progress=False, num_inference_steps=2
    )
    assert (summary.scored, summary.memorized, summary.unscored) == (3, 0, 3)
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == ["error"] * 3
