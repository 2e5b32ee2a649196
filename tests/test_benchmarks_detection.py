"""benchmarks/detection.py on the tiny model and two prompt files, through its command line: `--limit`
caps each file, every early method is scored at its steps, the figures and costs are written."""

import json

import pytest
from helpers import ROOT, loaded_script
from helpers import run_script_here as run_script

EARLY = {
    "memguard (attention spread, calibrated)": [1, 3],
    "memguard (top layers' entropy, calibrated)": [1, 3],
    "memguard (attention + noise, calibrated)": [1, 3],
    "memguard (attention at 1 or latent updates to k, calibrated)": [8],  # its own decision step
    "memguard (bottleneck entropy)": [1, 3, 5, 10],
    "Wen et al. 2024 (noise magnitude)": [1, 3, 5, 10],
    "Ren et al. 2024 E (entropy, first layer)": [1, 3],
    "Jeon et al. 2025 (Hessian, 1 JVP)": [1],
    "Asthana & Belagiannis 2026 (anisotropy)": [1],
    "Huang et al. 2026 (latent update norm)": [1, 3, 5, 10],
}
EXTRA_CALL = {"Jeon et al. 2025 (Hessian, 1 JVP)", "Asthana & Belagiannis 2026 (anisotropy)"}  # 2 UNet calls to a score


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detection")
    memorized, benign = folder / "memorized.txt", folder / "benign.jsonl"
    memorized.write_text("a red circle\n\na blue square\na green triangle\n")
    benign.write_text("".join(json.dumps({"caption": c}) + "\n" for c in ("a cat", "a dog", "a bird")))
    out, plot = folder / "detection.json", folder / "roc.png"
    run = run_script(
        "benchmarks/detection.py",
        *("--model", "tiny", "--memorized", memorized, "--benign", benign, "--limit", 2, "--seeds", 2),
        *("--steps", 10, "--batch-size", 2, "--no-post-hoc", "--device", "cpu", "--out", out, "--plot", plot),
        *("--fit-prompts", 6),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert plot.stat().st_size > 0
    return json.loads(out.read_text())


def test_limit_caps_each_prompt_file(result):
    settings = result["settings"]
    assert settings["memorized_prompts"] == settings["benign_prompts"] == 2
    assert settings["seeds"] == [0, 1] and settings["steps"] == 10


def test_every_early_method_is_scored_at_its_steps_pooled_and_averaged(result):
    steps = {}
    for row in result["results"]:
        steps.setdefault(row["method"], []).append(row["step"])
        pooled, averaged = row["n=1"], row["n=2"]  # 2 prompts x 2 seeds pooled; each prompt's 2 seeds averaged
        assert pooled["positives"] == pooled["negatives"] == 4 and averaged["positives"] == averaged["negatives"] == 2
        for figures in (pooled, averaged):
            assert 0 <= figures["auc"] <= 1 and 0 <= figures["tpr_at_1pct_fpr"] <= figures["tpr_at_3pct_fpr"] <= 1
    assert steps == EARLY  # --no-post-hoc; the standardized bottleneck score is fitted on the testbed only
    # one UNet call per step to the method's first step, plus the extra call of two baselines
    calls = {m: steps[0] + (m in EXTRA_CALL) for m, steps in EARLY.items()}
    assert {m: c["unet_calls"] for m, c in result["costs"].items()} == calls


def test_the_ablation_scores_the_default_with_one_layer_and_with_every_layer(result):
    rows = {row["signal"]: row for row in result["ablation"]}
    for signal in (
        "memguard default with the single most raised layer (max)",
        "memguard default with every layer (mean)",
    ):
        assert rows[signal]["n=1"]["positives"] == 4 and 0 <= rows[signal]["n=1"]["auc"] <= 1


@pytest.mark.parametrize("model", ["testbed", "testbed-xl"])
def test_the_testbed_prompts_are_the_model_s_own_memorized_captions(model):
    # the SDXL testbed was trained before the composition items: scoring today's 24 captions on it
    # would count six captions it never memorized as misses
    from memguard import testbed

    script = ROOT / "benchmarks" / "detection.py"
    with loaded_script(script, "detection_benchmark") as detection:
        memorized, benign = detection.testbed_prompts(30, model)
    truth = testbed.load_truth(testbed.folder(model) / "truth")
    assert memorized == [*truth.memorized_prompts.values(), *truth.mixed_prompts.values()]
    assert len(benign) == 30 and not set(benign) & set(memorized)
