"""benchmarks/short_prompts.py: its terse prompts lie below the shipped calibration's length range and its
in-range terse prompts inside it, so its two figures measure what they are named for."""

from helpers import ROOT, loaded_script
from transformers import CLIPTokenizer

from memguard.calibration import Calibration
from memguard.prompt_tokens import prompt_token_counts
from memguard.testbed import MODEL_DIR


def test_terse_prompts_are_shorter_than_the_calibration_and_the_in_range_ones_are_covered():
    calibration = Calibration.load(MODEL_DIR / "calibration.json")
    tokenizer = CLIPTokenizer.from_pretrained(MODEL_DIR / "tokenizer")
    with loaded_script(ROOT / "benchmarks" / "short_prompts.py", "short_prompts_benchmark") as bench:
        terse, in_range = bench.terse_prompts(), bench.in_range_prompts()
    assert "" in terse and len(set(terse)) == len(terse) > 50
    assert len(set(in_range)) == len(in_range) == bench.IN_RANGE_PROMPTS
    assert not set(terse) & set(in_range)
    assert {calibration.coverage(n) for n in prompt_token_counts(tokenizer, terse)} == {"shorter"}
    assert {calibration.coverage(n) for n in prompt_token_counts(tokenizer, in_range)} == {"covered"}
