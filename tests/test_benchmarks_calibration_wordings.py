"""The shipped calibration's other wordings are neither the training captions' nor the fresh ones the
calibration benchmarks measure on, so a gain on the fresh prompts is not a prompt seen twice."""

import re

from helpers import ROOT, loaded_script

from memguard.testbed.data import (
    OTHER_WORDINGS,
    calibration_prompts,
    other_wording_prompts,
    shipped_calibration_prompts,
)


def _literal_words(wording: str) -> set[str]:
    return set(re.findall(r"[a-z]+", re.sub(r"\{[a-z]+\}", " ", wording)))


def test_the_other_calibration_wordings_share_no_prompt_and_no_wording_word_with_the_others():
    with loaded_script(ROOT / "benchmarks" / "calibration_wordings.py", "calibration_wordings_benchmark") as bench:
        wider = other_wording_prompts(120)
        fresh = bench.fresh_prompts(200)
        own = calibration_prompts()
        assert len(wider) == 120 and len(set(wider)) > 100
        assert not set(wider) & set(own) and not set(wider) & set(fresh)
        # every prompt is one of the wider wordings filled in
        patterns = [re.compile(re.sub(r"\\\{[a-z]+\\\}", ".+", re.escape(w)) + "$") for w in OTHER_WORDINGS]
        assert all(any(p.match(prompt) for p in patterns) for prompt in wider)
        # and the words that make each wording (not the scene's) occur in no testbed or fresh prompt
        own_words = {word for prompt in own + fresh for word in re.findall(r"[a-z]+", prompt)}
        distinctive = set().union(*map(_literal_words, OTHER_WORDINGS)) - {"a", "an", "on", "of", "with", "it"}
        assert distinctive and not distinctive & own_words


def test_the_shipped_calibration_is_the_training_wordings_then_the_others_all_distinct():
    shipped = shipped_calibration_prompts()
    assert shipped[:1000] == calibration_prompts(n=1000)
    assert shipped[1000:] == other_wording_prompts()
    # each distinct prompt is one sample of the calibration's guarantee
    assert len(set(shipped)) == len(shipped) == 1500
