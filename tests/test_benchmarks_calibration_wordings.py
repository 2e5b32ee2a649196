"""benchmarks/calibration_wordings.py: its wider calibration wordings are neither the testbed's own nor the
fresh ones the calibration benchmark measures on, so a gain on the fresh prompts is not a prompt seen twice."""

import re

from helpers import ROOT, loaded_script

from memguard.testbed.data import calibration_prompts


def _literal_words(wording: str) -> set[str]:
    return set(re.findall(r"[a-z]+", re.sub(r"\{[a-z]+\}", " ", wording)))


def test_the_wider_wordings_share_no_prompt_and_no_wording_word_with_the_others():
    with loaded_script(ROOT / "benchmarks" / "calibration_wordings.py", "calibration_wordings_benchmark") as bench:
        wider = bench.wider_prompts(120)
        fresh = bench.fresh_prompts(200)
        own = calibration_prompts()
        assert len(wider) == 120 and len(set(wider)) > 100
        assert not set(wider) & set(own) and not set(wider) & set(fresh)
        # every prompt is one of the wider wordings filled in
        patterns = [re.compile(re.sub(r"\\\{[a-z]+\\\}", ".+", re.escape(w)) + "$") for w in bench.WIDER_WORDINGS]
        assert all(any(p.match(prompt) for p in patterns) for prompt in wider)
        # and the words that make each wording (not the scene's) occur in no testbed or fresh prompt
        own_words = {word for prompt in own + fresh for word in re.findall(r"[a-z]+", prompt)}
        distinctive = set().union(*map(_literal_words, bench.WIDER_WORDINGS)) - {"a", "an", "on", "of", "with", "it"}
        assert distinctive and not distinctive & own_words
