"""benchmarks/intent.py: its prompts file and the worst-case harness around the intent resolver."""

import re
from pathlib import Path

import pytest
from helpers import loaded_script

from memguard.intent import IntentRegistry, IntentResolver

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "intent.py"


@pytest.fixture(scope="module")
def bench():
    with loaded_script(SCRIPT, "benchmarks_intent") as module:
        yield module


def test_prompts_file_has_the_three_sets_and_no_duplicates(bench):
    sections = bench.read_sections()
    assert tuple(sections) == bench.SECTIONS
    sizes = {name: len(entries) for name, entries in sections.items()}
    assert sizes["memorized_style"] >= 50 and sizes["control"] >= 15 and sizes["near_miss"] >= 8, sizes
    seen = {}
    for name, entries in sections.items():
        for prompt, note in entries:
            key = re.sub(r"\s+", " ", prompt.lower()).strip()
            assert key not in seen, f"{prompt!r} in [{name}] repeats [{seen[key]}]"
            seen[key] = name
            assert prompt and bench.NOTE.strip() not in prompt
            assert bool(note) == (name == "near_miss"), f"near-misses, and only they, say what they mean: {prompt!r}"


def test_worst_case_makes_every_word_a_trigger_and_the_residual_decides(bench):
    resolver = IntentResolver(IntentRegistry.load(bench.EXAMPLE_REGISTRY))
    prompt = "a poster of the Mona Lisa in a subway station"
    verdict, scored = bench.worst_case(resolver, prompt, residual_clears=True)
    assert verdict.intent == "intended" and [m.concept.name for m in verdict.mentions] == ["Mona Lisa"]
    assert scored == ["a poster of the in a subway station"]
    verdict, _ = bench.worst_case(resolver, prompt, residual_clears=False)
    assert verdict.intent == "mixed"
    assert [t.text for t in verdict.triggers] == ["a poster of the", "Mona Lisa", "in a subway station"]

    judged = bench.judge(resolver, "Crime Junkie Podcast Logo")
    assert judged["verdict"] == judged["verdict_if_rest_memorizes"] == "unintended"
    assert judged["mentions"] == [] and judged["residual_text"] is None


def test_fresh_intended_prompts_are_new_distinct_and_each_gets_one_verdict(bench):
    from memguard import testbed
    from memguard.testbed.data import evaluation_prompts

    pipe, _ = testbed.load()
    fresh = bench.fresh_intended(pipe, [2000])
    drawn = {p.prompt for p in evaluation_prompts(seed=2000, n_novel=0).intended}
    evaluation = {p.prompt for p in evaluation_prompts().intended}
    assert 0 < fresh["prompts"] == len(drawn - evaluation)  # the evaluation set's prompts are not counted again
    assert sum(fresh["verdicts"].values()) == fresh["prompts"]
    assert fresh["verdicts"]["unintended"] == 0  # every one names a registered concept
    alone = fresh["verdicts"]["intended"] + fresh["verdicts"]["none"]
    assert fresh["left_alone"] == pytest.approx(alone / fresh["prompts"])
    assert len(fresh["judged_mixed"]) == fresh["verdicts"]["mixed"]
    assert all(r["prompt"] in drawn for r in fresh["judged_mixed"])
