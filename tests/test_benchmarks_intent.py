"""benchmarks/intent.py, one short run through its command line (one noise seed, one fresh prompt seed,
explicit matching): the testbed part, its prompts file, the worst-case verdicts on the example registry
and the fresh intended prompts, checked on the JSON it writes."""

import json
import re

import pytest
from helpers import run_script_here as run_script

SECTIONS = ("memorized_style", "control", "near_miss")  # the prompts file's sets, in file order


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("intent")
    out, plot = folder / "intent.json", folder / "intent.png"
    run = run_script(
        "benchmarks/intent.py",
        *("--seeds", 0, "--fresh-intended-seeds", 2000, "--no-implicit", "--out", out, "--plot", plot),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert plot.stat().st_size > 0
    return json.loads(out.read_text())


def _judged(result) -> dict[str, list[dict]]:
    """{section: [judged prompt]} of the explicit matching, in file order."""
    return {name: part["prompts"] for name, part in result["real_world"]["results"]["explicit"].items()}


def test_the_testbed_part_scores_every_evaluation_prompt_once_per_seed(result):
    from memguard import testbed as shipped

    ev = shipped.load_truth(shipped.MODEL_DIR / "truth").evaluation_prompts()  # the shipped model's own items
    testbed = result["testbed"]
    settings = testbed["settings"]
    assert settings["seeds"] == [0] and settings["registry"] == "memguard/testbed/registry.yaml"
    sizes = dict(intended=len(ev.intended), unintended=len(ev.memorized), mixed=len(ev.mixed), none=len(ev.novel))
    assert settings["prompts"] == sizes and len(testbed["rows"]) == sum(sizes.values())
    assert {truth: sum(row.values()) for truth, row in testbed["confusion"].items()} == settings["prompts"]


def test_prompts_file_has_the_three_sets_and_no_duplicates(result):
    assert result["real_world"]["prompts_file"] == "benchmarks/data/memorized_style_prompts.txt"
    assert result["real_world"]["implicit"]["available"] is False  # --no-implicit
    assert list(result["real_world"]["results"]) == ["explicit"]
    sections = _judged(result)
    assert tuple(sections) == SECTIONS
    sizes = {name: len(entries) for name, entries in sections.items()}
    assert sizes["memorized_style"] >= 50 and sizes["control"] >= 15 and sizes["near_miss"] >= 8, sizes
    seen = {}
    for name, entries in sections.items():
        for entry in entries:
            prompt, note = entry["prompt"], entry["note"]
            key = re.sub(r"\s+", " ", prompt.lower()).strip()
            assert key not in seen, f"{prompt!r} in [{name}] repeats [{seen[key]}]"
            seen[key] = name
            assert prompt and "--" not in prompt  # the note, after " -- ", is not part of the prompt
            assert bool(note) == (name == "near_miss"), f"near-misses, and only they, say what they mean: {prompt!r}"


def test_worst_case_makes_every_word_a_trigger_and_the_residual_decides(result):
    # the trigger spans themselves: tests/test_intent.py (a mention inside a flagged prompt)
    judged = {entry["prompt"]: entry for entries in _judged(result).values() for entry in entries}
    poster = judged["a poster of the Mona Lisa in a subway station"]
    assert poster["verdict"] == "intended" and [m["concept"] for m in poster["mentions"]] == ["Mona Lisa"]
    assert poster["residual_text"] == "a poster of the in a subway station" and poster["spared"] == ["Mona Lisa"]
    assert poster["verdict_if_rest_memorizes"] == "mixed"

    logo = judged["Crime Junkie Podcast Logo"]
    assert logo["verdict"] == logo["verdict_if_rest_memorizes"] == "unintended"
    assert logo["mentions"] == [] and logo["residual_text"] is None


def test_fresh_intended_prompts_are_new_distinct_and_each_gets_one_verdict(result):
    from memguard.testbed.data import evaluation_prompts

    fresh = result["testbed"]["fresh_intended"]
    assert fresh["prompt_seeds"] == [2000]
    drawn = {p.prompt for p in evaluation_prompts(seed=2000, n_novel=0).intended}
    evaluation = {p.prompt for p in evaluation_prompts().intended}
    assert 0 < fresh["prompts"] == len(drawn - evaluation)  # the evaluation set's prompts are not counted again
    assert sum(fresh["verdicts"].values()) == fresh["prompts"]
    assert fresh["verdicts"]["unintended"] == 0  # every one names a registered concept
    alone = fresh["verdicts"]["intended"] + fresh["verdicts"]["none"]
    assert fresh["left_alone"] == pytest.approx(alone / fresh["prompts"])
    assert len(fresh["judged_mixed"]) == fresh["verdicts"]["mixed"]
    assert all(r["prompt"] in drawn for r in fresh["judged_mixed"])
