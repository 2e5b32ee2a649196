"""A calibration's guarantee describes prompts as long as its own: the range is recorded, each image's
prompt is reported against it, counted, and (opt-in) left alone outside it."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import BENIGN_SCENES
from prometheus_client import CollectorRegistry

import memguard
from memguard import GuardConfig, Policy
from memguard.calibration import Calibration, CalibrationError
from memguard.metrics import COVERAGES, GuardMetrics

STEPS = 3
SHORT = "star"  # one token: shorter than every scene caption
LONG = " ".join(["a large red circle and a small blue square on a white background"] * 3)


@pytest.fixture(scope="module")
def calibration(shared_base_pipe):
    return memguard.calibrate(
        shared_base_pipe, BENIGN_SCENES, target_fpr=0.2, detector="noise_rms", num_inference_steps=STEPS, progress=False
    )


def _own_tokens(tokenizer, prompt: str) -> int:
    return len(tokenizer(prompt).input_ids) - 2  # without the begin and end tokens the tokenizer adds


def _run(pipe, prompts, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)


def test_a_calibration_records_its_prompts_shortest_and_longest_token_counts(shared_base_pipe, calibration):
    counts = [_own_tokens(shared_base_pipe.tokenizer, p) for p in BENIGN_SCENES]
    assert calibration.prompt_tokens == [min(counts), max(counts)]
    assert min(counts) > _own_tokens(shared_base_pipe.tokenizer, SHORT)
    assert max(counts) < _own_tokens(shared_base_pipe.tokenizer, LONG)
    assert calibration.coverage(None) is None
    assert [calibration.coverage(n) for n in (min(counts) - 1, min(counts), max(counts), max(counts) + 1)] == [
        "shorter",
        "covered",
        "covered",
        "longer",
    ]


def test_each_report_says_whether_the_calibration_covers_its_prompt_and_metrics_count_it(shared_base_pipe, calibration):
    metrics = GuardMetrics(CollectorRegistry())
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration, metrics=metrics, name="cov"))
    out = _run(guarded, [SHORT, BENIGN_SCENES[3], LONG], num_images_per_prompt=2)
    assert [r.calibration_coverage for r in out.memorization] == ["shorter"] * 2 + ["covered"] * 2 + ["longer"] * 2
    assert all(r.to_dict()["calibration_coverage"] == r.calibration_coverage for r in out.memorization)
    series = "memguard_calibration_coverage_total"
    counted = {c: metrics.registry.get_sample_value(series, {"pipeline": "cov", "coverage": c}) for c in COVERAGES}
    assert counted == {"covered": 2.0, "shorter": 2.0, "longer": 2.0, "unknown": 0.0}


def test_without_a_recorded_range_or_a_prompt_the_coverage_is_unknown(shared_base_pipe, calibration):
    metrics = GuardMetrics(CollectorRegistry())
    explicit = memguard.guard(shared_base_pipe, GuardConfig(threshold=1e9, detector="noise_rms", metrics=metrics))
    assert [r.calibration_coverage for r in _run(explicit, [SHORT, LONG]).memorization] == [None, None]
    assert metrics.registry.get_sample_value(
        "memguard_calibration_coverage_total", {"pipeline": "default", "coverage": "unknown"}
    ) == 2.0  # fmt: skip
    older = dataclasses.replace(calibration, prompt_tokens=None)  # a file written before the record
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=older))
    assert _run(guarded, [SHORT]).memorization[0].calibration_coverage is None
    embeds, _ = shared_base_pipe.encode_prompt(SHORT, "cpu", 1, True)
    recorded = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    by_embeds = recorded(prompt_embeds=embeds, num_inference_steps=STEPS, output_type="np")
    assert by_embeds.memorization[0].calibration_coverage is None  # no text to count


def test_a_tokenizer_that_cannot_count_leaves_the_coverage_unknown_and_the_image_judged(base_pipe, calibration):
    class Refusing:  # the pipeline's tokenizer, refusing the counting call's arguments
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, *args, **kwargs):
            if kwargs.get("add_special_tokens") is False:
                raise TypeError("unsupported")
            return self.inner(*args, **kwargs)

        def __getattr__(self, name):
            if name == "inner":  # not set yet (a copy being built)
                raise AttributeError(name)
            return getattr(self.inner, name)

    base_pipe.tokenizer = Refusing(base_pipe.tokenizer)
    everything = dataclasses.replace(calibration, threshold=0.0)
    guarded = memguard.guard(base_pipe, GuardConfig(calibration=everything, policy=Policy.uniform("flag")))
    report = _run(guarded, [SHORT]).memorization[0]
    assert report.status == "checked" and report.outcome == "flagged" and report.calibration_coverage is None


def test_act_uncovered_false_leaves_prompts_outside_the_range_as_drawn(shared_base_pipe, calibration):
    everything = dataclasses.replace(calibration, threshold=0.0)  # every noise RMS is above it
    prompts = [SHORT, BENIGN_SCENES[0], LONG]
    reference = _run(shared_base_pipe, prompts).images
    acting = memguard.guard(shared_base_pipe, GuardConfig(calibration=everything, policy=Policy.uniform("block")))
    assert [r.outcome for r in _run(acting, prompts).memorization] == ["blocked"] * 3
    observing = memguard.guard(
        shared_base_pipe,
        GuardConfig(calibration=everything, policy=Policy.uniform("block"), act_uncovered=False),
    )
    out = _run(observing, prompts)
    assert [r.outcome for r in out.memorization] == ["observed", "blocked", "observed"]
    assert np.array_equal(out.images[0], reference[0]) and np.array_equal(out.images[2], reference[2])
    assert not out.images[1].any()  # the covered prompt's image is blocked (blanked)
    short, covered, long = out.memorization
    assert "shorter than every calibration prompt; observed only (GuardConfig.act_uncovered=False)" in short.reason
    assert "longer than every calibration prompt" in long.reason and "calibration prompt" not in covered.reason
    assert SHORT not in short.reason  # the note names no prompt


def test_a_resampled_image_keeps_its_prompts_coverage(shared_base_pipe, calibration):
    everything = dataclasses.replace(calibration, threshold=0.0)
    guarded = memguard.guard(
        shared_base_pipe, GuardConfig(calibration=everything, policy=Policy.uniform("resample", max_attempts=1))
    )
    report = _run(guarded, [SHORT]).memorization[0]
    assert report.resamples == 1 and report.calibration_coverage == "shorter"


def test_a_scan_records_each_prompts_coverage_and_counts_those_outside(shared_base_pipe, calibration, tmp_path):
    from accelerate import PartialState

    from memguard.prompts_file import Prompt
    from memguard.scan import run_scan

    pipe = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    texts = [SHORT, BENIGN_SCENES[5], LONG, BENIGN_SCENES[6]]
    out = tmp_path / "scan.jsonl"
    summary = run_scan(
        pipe,
        [Prompt(i, i + 1, t) for i, t in enumerate(texts)],
        out,
        identity={},
        state=PartialState(cpu=True),
        progress=False,
        num_inference_steps=STEPS,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["calibration_coverage"] for r in rows] == ["shorter", "covered", "longer", "covered"]
    assert (summary.scored, summary.uncovered) == (4, 2)


@pytest.mark.parametrize(
    "value",
    [[5, 3], [-1, 2], [1, 2, 3], [1], ["1", 2], [True, 2], [1.0, 2], 7, [0, 100_001]],
)
def test_a_malformed_prompt_token_range_is_refused_naming_the_field(calibration, tmp_path, value):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**calibration.to_dict(), "prompt_tokens": value}))
    with pytest.raises(CalibrationError, match="prompt_tokens"):
        Calibration.load(path)


def test_a_file_of_the_previous_format_reads_without_the_range(calibration, tmp_path):
    data = calibration.to_dict()
    del data["prompt_tokens"]
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**data, "format_version": 2}))
    loaded = Calibration.load(path)
    assert loaded.prompt_tokens is None and loaded.coverage(3) is None
    calibration.save(path)
    assert Calibration.load(path) == calibration
