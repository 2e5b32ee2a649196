"""Every row of the README's bad-input table: a clear error naming the argument, or the file and field."""

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from diffusers import DDPMPipeline, DDPMScheduler, StableDiffusionImg2ImgPipeline, UNet2DModel
from helpers import PROMPTS, loaded_script, seeded
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

import memguard
from memguard import (
    Attempt,
    Calibration,
    GuardConfig,
    GuardedStableDiffusionPipeline,
    IntentRegistry,
    RegistryError,
    cli,
)
from memguard.calibration import CalibrationError
from memguard.prompts_file import PromptFileError, read_prompts
from memguard.report import CopyFinding, MemorizationReport, Trigger
from memguard.scan import ScanOutputError, prepare_output
from memguard.testbed.tiny import tiny_pipeline

EXAMPLES = Path(__file__).parent.parent / "examples"
SHIPPED_CALIBRATION = Path(memguard.__file__).parent / "testbed" / "model" / "calibration.json"

SECRET = "the secret family photo of Jane Q. Example"


def test_decision_step_beyond_the_number_of_steps(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(decision_step=5))
    with pytest.raises(ValueError, match=r"decision_step=5 is beyond num_inference_steps=4") as err:
        guarded(SECRET, num_inference_steps=4)
    assert SECRET not in str(err.value)


def test_unknown_attention_layer(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(attention_layers=("mid_block.attentions.9.attn2",)))
    with pytest.raises(
        ValueError, match=r"attention_layers: 'mid_block.attentions.9.attn2' is not a cross-attention layer"
    ):
        guarded(SECRET, num_inference_steps=2)


def test_calibration_of_another_model(shared_base_pipe):
    benign = [f"prompt number {i}" for i in range(10)]
    calibration = memguard.calibrate(
        tiny_pipeline(seed=1), benign, target_fpr=0.3, num_inference_steps=2, progress=False
    )
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    with pytest.raises(ValueError, match="calibration was measured on another model"):
        guarded(SECRET, num_inference_steps=2)


def test_unsupported_pipeline_classes():
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    unconditional = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(
        TypeError, match=r"no guard for DDPMPipeline; it guards StableDiffusionPipeline, .*XLControlNet"
    ):
        memguard.guard(unconditional)
    with pytest.raises(TypeError, match="got str"):
        GuardedStableDiffusionPipeline.from_pipe("runwayml/stable-diffusion-v1-5")


def test_guard_argument_of_the_wrong_type(shared_base_pipe):
    with pytest.raises(TypeError, match="memguard.GuardConfig"):
        memguard.guard(shared_base_pipe, {"action": "block"})


def test_unknown_call_argument(shared_base_pipe):
    with pytest.raises(TypeError, match="num_inference_step"):
        memguard.guard(shared_base_pipe)(SECRET, num_inference_step=3)


@pytest.mark.parametrize(
    "prompts, kwargs, error, match",
    [
        ([], {}, ValueError, "benign_prompts is empty"),
        ("one prompt", {}, TypeError, "sequence of prompt strings"),
        ([SECRET] * 5, {"target_fpr": 0.01}, ValueError, "needs at least 299 distinct benign prompts, got 1:"),
        ([SECRET] * 20, {"target_fpr": 0.3, "num_images_per_prompt": 20}, ValueError, "distinct benign prompts, got 1"),
        (["a", "b"] * 10, {"target_fpr": 0.3, "num_images_per_prompt": 0}, ValueError, "num_images_per_prompt must be"),
        (["a", "b"] * 10, {"target_fpr": 0.3, "guidance_scale": float("nan")}, ValueError, "guidance_scale must be"),
        (["a", "b"] * 10, {"target_fpr": 0.3, "guidance_scale": "7.5"}, TypeError, "guidance_scale must be a number"),
        ([SECRET] * 5, {"target_fpr": 1.5}, ValueError, "target_fpr"),
    ],
)
def test_calibrate_bad_input(shared_base_pipe, prompts, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        memguard.calibrate(shared_base_pipe, prompts, num_inference_steps=2, progress=False, **kwargs)
    assert SECRET not in str(err.value)


def test_score_refuses_arguments_it_sets_itself(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    with pytest.raises(TypeError, match="'generator'"):
        guarded.score(PROMPTS, generator=seeded(1))
    with pytest.raises(ValueError, match="batch_size"):
        guarded.score(PROMPTS, batch_size=0)
    with pytest.raises(ValueError, match="num_images_per_prompt must be >= 1, got 0"):
        guarded.score(PROMPTS, num_images_per_prompt=0)
    with pytest.raises(TypeError, match="num_images_per_prompt must be an int, got float"):
        guarded.score(PROMPTS, num_images_per_prompt=2.0)
    with pytest.raises(ValueError, match="seed must be in 0..2\\*\\*64 - 2, got 18446744073709551615"):
        guarded.score(PROMPTS, seed=2**64 - 1)  # the second prompt's image would be seeded past the range
    with pytest.raises(ValueError, match="seed must be in"):
        guarded.score(PROMPTS, seed=-1)


def test_a_controlnet_image_of_the_wrong_batch_size_names_the_argument():
    from memguard.testbed.tiny import tiny_family_pipeline

    guarded = memguard.guard(tiny_family_pipeline("stable-diffusion-controlnet"))
    images = [PIL.Image.new("RGB", (32, 32))] * 3  # three control images for two prompts
    with pytest.raises(ValueError, match="image batch size") as err:
        guarded([SECRET, "a red circle"], image=images, num_inference_steps=2, height=32, width=32)
    assert SECRET not in str(err.value)


def test_strength_that_leaves_fewer_steps_than_the_decision_step_names_strength():
    from memguard.testbed.tiny import tiny_family_pipeline

    guarded = memguard.guard(tiny_family_pipeline("stable-diffusion-img2img"), GuardConfig(decision_step=3))
    with pytest.raises(
        ValueError, match=r"decision_step=3 is beyond the 2 denoising step\(s\) that strength=0.5"
    ) as err:
        guarded(SECRET, image=PIL.Image.new("RGB", (32, 32)), strength=0.5, num_inference_steps=4)
    assert SECRET not in str(err.value) and "raise strength or raise num_inference_steps" in str(err.value)


@pytest.mark.parametrize(("denoising_end", "decision_step", "left"), [(0.2, 1, 0), (0.3, 2, 1)])
def test_an_sdxl_denoising_end_that_leaves_too_few_steps_names_denoising_end(denoising_end, decision_step, left):
    from memguard.testbed.tiny import tiny_family_pipeline

    guarded = memguard.guard(tiny_family_pipeline("stable-diffusion-xl"), GuardConfig(decision_step=decision_step))
    # the fraction of the schedule is counted once the loop runs; a loop with no step is refused too
    with pytest.raises(
        ValueError, match=rf"beyond the {left} denoising step\(s\) that denoising_end={denoising_end}"
    ) as err:
        guarded([SECRET], denoising_end=denoising_end, num_inference_steps=4, output_type="latent")
    assert SECRET not in str(err.value)


def test_a_calibration_of_another_family_names_the_calibration(shared_base_pipe):
    benign = [f"prompt number {i}" for i in range(10)]
    calibration = memguard.calibrate(shared_base_pipe, benign, target_fpr=0.3, num_inference_steps=2, progress=False)
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(
        memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    )
    with pytest.raises(ValueError, match=r"GuardConfig.calibration was measured on a 'stable-diffusion' pipeline"):
        img2img(SECRET, image=PIL.Image.new("RGB", (32, 32)), num_inference_steps=2)


def test_num_inference_steps_none_names_the_argument(shared_base_pipe):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an int >= 1, got None") as err:
        memguard.guard(shared_base_pipe)(SECRET, num_inference_steps=None)
    assert SECRET not in str(err.value)


# --- hostile input: every file memguard reads, the CLI's options, reprs and HTTP errors -------------
def test_report_reprs_never_hold_prompt_text():
    trigger = Trigger(SECRET[4:10], 4, 10, 1.0, concept=None)
    report = MemorizationReport(
        0.9,
        0.5,
        True,
        1,
        triggers=[trigger],
        attempts=[Attempt(0.9, True, "unintended")],
        copy=CopyFinding("m01/0", 0.97, True),
    )
    for text in (repr(report), str(report), repr(trigger), repr(report.attempts), repr(report.copy)):
        assert "secret" not in text
    assert "Trigger(start=4, end=10" in repr(report)  # the span is still shown, by offsets
    assert report.to_dict(include_text=True)["triggers"][0]["text"] == "secret"
    assert "text" not in report.to_dict()["triggers"][0]


def test_fastapi_validation_errors_do_not_echo_the_prompt():
    pytest.importorskip("fastapi", reason="install memguard[serve]")
    from fastapi.testclient import TestClient

    with loaded_script(EXAMPLES / "fastapi_service" / "app.py", "fastapi_service_app") as service:
        app = service.create_app(memguard.guard(tiny_pipeline(seed=0)), registry=CollectorRegistry())
    with TestClient(app) as client:
        responses = [
            client.post("/generate", json={"prompt": SECRET * 100}),  # past max_length
            client.post("/generate", json={"prompt": SECRET, "seed": "x", "steps": 0}),
            client.post("/generate", json=[SECRET]),
            client.post(
                "/generate", content=b'{"prompt": "' + SECRET.encode(), headers={"content-type": "application/json"}
            ),
        ]
    assert [r.status_code for r in responses] == [422] * 4
    for response in responses:
        assert "secret" not in response.text.lower()
        assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["detail"])
    (too_long,) = responses[0].json()["detail"]
    assert too_long["loc"] == ["body", "prompt"] and "at most 2000 characters" in too_long["msg"]
    assert {tuple(e["loc"]) for e in responses[1].json()["detail"]} == {("body", "seed"), ("body", "steps")}


def test_registry_keys_of_mixed_types_name_the_file_and_field(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("version: 1\nconcepts:\n  - name: A\n    1: one\n    colour: red\n")
    with pytest.raises(RegistryError, match=r"registry.yaml, line 3: concepts\[0\]: field names must be strings"):
        IntentRegistry.load(path)
    path.write_text("concepts: []\n1: one\nx: two\n")
    with pytest.raises(RegistryError, match=r"registry.yaml, line 1: \(top level\): field names must be strings"):
        IntentRegistry.load(path)


def test_registry_nested_thousands_of_levels_deep_is_refused(tmp_path):
    for name, text in [
        ("deep.yaml", "concepts:\n" + "- " * 3000 + "x\n"),
        ("flow.yaml", "concepts: " + "[" * 3000 + "]" * 3000),
        ("deep.json", '{"concepts": ' + "[" * 3000 + "]" * 3000 + "}"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(RegistryError, match=rf"{name}.*nest"):
            IntentRegistry.load(path)


def test_registry_alias_fan_out_is_refused_at_once(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]  # 9**9 values
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\nconcepts: []\n")
    assert path.stat().st_size < 600
    started = time.perf_counter()
    with pytest.raises(RegistryError, match=r"laughs.yaml, line \d+: holds more than 100,000 values once its YAML"):
        IntentRegistry.load(path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layer_stats": [0.1, 0.2]}, "layer_stats must be a mapping"),
        ({"num_scores": "1" + "0" * 4999}, "num_scores must be an integer, got an integer of 5,000 digits"),
        ({"threshold": True}, "threshold must be a number, got bool"),
        ({"threshold": 1e308}, r"threshold must be a finite number with \|threshold\| <= 1e\+06"),
        (
            {"detector": "bottleneck_entropy", "detector_state": None, "threshold": 2.0},
            r"threshold 2.0 is outside the scores detector 'bottleneck_entropy' can give \[0, 1\]",
        ),
        ({"decision_step": 1.5}, "decision_step must be an integer, got float"),
        ({"num_inference_steps": "50"}, "num_inference_steps must be an integer, got str"),
        ({"guidance_scale": "x"}, "guidance_scale must be a number, got str"),
        # a hand-edited state is refused when the file loads, not at the first call
        (
            {"detector_state": {"layer_stats": {"x": [0.5, 0.0]}, "top_layers": 1}},
            r"detector_state does not fit detector 'top_layer_entropy': .*the spread must be > 0",
        ),
        ({"detector_state": {"layer_stats": "x", "top_layers": 3}}, "detector_state does not fit detector"),
    ],
)
def test_calibration_fields_are_checked_strictly_and_name_the_file(tmp_path, change, message):
    shipped = json.loads(SHIPPED_CALIBRATION.read_text())
    path = tmp_path / "calibration.json"
    text = json.dumps({**shipped, **{k: v for k, v in change.items() if k != "num_scores"}})
    if "num_scores" in change:  # the digits, written as a JSON number (Python cannot format such an int)
        text = text.replace(f'"num_scores": {shipped["num_scores"]}', f'"num_scores": {change["num_scores"]}')
    path.write_text(text)
    with pytest.raises(CalibrationError, match=rf"calibration file {re.escape(str(path))}: calibration {message}"):
        Calibration.load(path)
    assert Calibration.load(SHIPPED_CALIBRATION).threshold == shipped["threshold"]  # the shipped file still loads


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded: a bad option must be refused before any work")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", SECRET, "--model", "tiny", "--out", "{file}"], "Invalid value for '--out'"),
        (["scan", "{prompts}", "--model", "tiny", "--seed", str(2**70)], "Invalid value for '--seed'"),
        (
            ["scan", "{prompts}", "--model", "tiny", "--guidance", "nan"],
            "Invalid value for '--guidance': must be a finite",
        ),
        # each option named for its own fault, whatever runs after it
        (["scan", "{prompts}", "--model", "tiny", "--detector", "bottleneck_entropy"], "'--detector': detector"),
        (["scan", "{prompts}", "--model", "tiny", "--out", "{file}/x.jsonl"], "'--out': cannot create the folder"),
        (["generate", SECRET, "--model", "tiny", "--out", "{dir}", "--detector", "nope"], "'--detector': unknown"),
        (["calibrate", "--model", "tiny", "--detector", "nope", "--out", "{dir}/c.json"], "'--detector': unknown"),
        (["calibrate", "--model", "tiny", "--confidence", "0", "--out", "{dir}/c.json"], "'--confidence': must be"),
        (
            ["calibrate", "--model", "tiny", "--decision-step", "5", "--steps", "2", "--out", "{dir}/c.json"],
            "'--decision-step': the detector decides at step 5, beyond --steps 2",
        ),
        (["calibrate", "--model", "tiny", "--out", "{dir}/c.png"], "'--out': c.png is where the histogram would go"),
        (["calibrate", "--model", "tiny", "--out", "{dir}/c.json", "--histogram", "{dir}/h.json"], "'--histogram'"),
        (["calibrate", "--model", "tiny", "--out", "{file}/c.json"], "'--out': cannot create the folder"),
        (["index", "build", "{dir}", "--out", "{file}/p.faiss"], "'--out': cannot create the folder"),
    ],
)
def test_cli_refuses_bad_options_before_any_work_naming_the_option(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(cli, "load_guarded", _no_model)
    (tmp_path / "file").write_text("an existing file, not a folder")
    (tmp_path / "prompts.txt").write_text(SECRET + "\n")
    (tmp_path / "dir").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "dir" / "protected.png")
    args = [a.format(file=tmp_path / "file", prompts=tmp_path / "prompts.txt", dir=tmp_path / "dir") for a in args]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    squeezed = " ".join(part.strip(" │") for part in result.output.splitlines())
    assert message in " ".join(squeezed.split()) and SECRET not in result.output


def test_a_scan_refuses_a_nan_setting_it_could_never_resume(tmp_path):
    identity = {"guidance_scale": math.nan, "seed": 0}
    with pytest.raises(ScanOutputError, match="scan setting guidance_scale must be a finite number"):
        prepare_output(tmp_path / "scan.jsonl", identity, num_prompts=3)
    assert not (tmp_path / "scan.jsonl").exists()


def test_memguard_testbed_is_an_attribute_imported_on_first_use():
    code = (
        "import sys, memguard\n"
        "assert 'memguard.testbed' not in sys.modules, 'import memguard imported the testbed'\n"
        "assert callable(memguard.testbed.load) and 'memguard.testbed' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("deep.jsonl", '{"caption": ' + "[" * 100_000 + "]" * 100_000 + "}\n", r"deep.jsonl:1: nested deeper than 32"),
        ("digits.jsonl", '{"caption": 1' + "0" * 5000 + "}\n", r"digits.jsonl:1: 'caption' must be a non-empty string"),
        ("long.txt", "a" * (2**20 + 1) + "\n", r"long.txt:1: longer than the 1,048,576-character limit"),
    ],
)
def test_prompt_files_are_parsed_at_a_bounded_cost(tmp_path, name, body, message):
    path = tmp_path / name
    path.write_text(body)
    started = time.perf_counter()
    with pytest.raises(PromptFileError, match=message):
        read_prompts(path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"index": 1' + "0" * 5000 + "}", r"scan.jsonl:1: bad or repeated prompt index"),
        ('{"index": ' + "[" * 100_000 + "]" * 100_000 + "}", r"scan.jsonl:1: not a scan record"),
        ('{"index": true}', r"scan.jsonl:1: bad or repeated prompt index"),
    ],
)
def test_scan_run_files_are_parsed_at_a_bounded_cost(tmp_path, record, message):
    out = tmp_path / "scan.jsonl"
    identity = {"seed": 0}
    prepare_output(out, identity, num_prompts=3)
    out.write_text(record + "\n")
    with pytest.raises(ScanOutputError, match=message):
        prepare_output(out, identity, num_prompts=3)
    out.write_bytes(b'{"index": 0}\n\xff\xfe\n')
    with pytest.raises(ScanOutputError, match=r"scan.jsonl:2: not a scan record"):
        prepare_output(out, identity, num_prompts=3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": 3}, r"ids: expected a list of strings"),
        ({"params": {"nprobe": 1.5}}, r"params: IndexParams.nprobe must be an int, got float"),
        ({"dims": True}, r"dims: expected an integer, got bool"),
        ({"ids": "NESTED"}, r"nested deeper than 32 levels"),
    ],
)
def test_index_sidecars_are_parsed_at_a_bounded_cost(tmp_path, change, message):
    from memguard.verify import IndexFileError, PixelEncoder, VerificationIndex

    path = tmp_path / "protected.faiss"
    images = [np.full((8, 8, 3), value, dtype=np.uint8) for value in (0, 128, 255)]
    VerificationIndex.build(images, ["a", "b", "c"], PixelEncoder(size=8)).save(path)
    sidecar = tmp_path / "protected.faiss.json"
    text = json.dumps({**json.loads(sidecar.read_text()), **change})
    sidecar.write_text(text.replace('"NESTED"', "[" * 100_000 + "]" * 100_000))
    with pytest.raises(IndexFileError, match=message):
        VerificationIndex.load(path)


def test_a_prompt_log_sample_counts_lines_a_parser_would_choke_on_as_malformed(tmp_path):
    from memguard.prompts_corpus import sample_prompt_log

    log = tmp_path / "log.jsonl"
    lines = [
        '{"caption": "a red circle"}',
        '{"caption": ' + "[" * 30_000 + "]" * 30_000 + "}",  # under 64 KiB, nested past the recursion limit
        '{"caption": "\\ud800"}',  # half a surrogate pair: not text
        '{"caption": "a blue square", "user": 1' + "0" * 5000 + "}",  # an unread field with a 5,001-digit number
    ]
    log.write_text("\n".join(lines) + "\n")
    sample = sample_prompt_log(log, n=10)
    assert sorted(sample.prompts) == ["a blue square", "a red circle"]
    assert (sample.lines_read, sample.malformed) == (4, 2)


def test_registry_and_calibration_files_have_a_size_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 110_000 + "concepts: []\n")  # 1.1 MB
    with pytest.raises(RegistryError, match=r"big.yaml: larger than the 1,048,576-byte limit"):
        IntentRegistry.load(big)
    padded = tmp_path / "calibration.json"
    padded.write_text(SHIPPED_CALIBRATION.read_text() + " " * (1 << 20))
    with pytest.raises(CalibrationError, match=r"calibration.json: larger than the 1,048,576-byte limit"):
        Calibration.load(padded)


def test_a_calibration_saved_with_a_bom_loads_and_an_empty_path_is_named():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calibration.json"
        path.write_bytes(b"\xef\xbb\xbf" + SHIPPED_CALIBRATION.read_bytes())  # as some Windows editors save
        assert Calibration.load(path) == Calibration.load(SHIPPED_CALIBRATION)
    with pytest.raises(ValueError, match="GuardConfig.calibration is an empty path"):
        GuardConfig(calibration="")
