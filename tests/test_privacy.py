"""Prompts never reach logs, warnings, reports or exception messages."""

import json
import logging
import warnings

import pytest
from conftest import seeded

import memguard
from memguard import GuardConfig, Policy

SECRET = "Zyxwv Private Diary Page Of Jane Q. Example"


def test_no_prompt_text_in_logs_warnings_or_reports(shared_base_pipe, caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [
            memguard.guard(shared_base_pipe, config)(
                [SECRET, SECRET], num_inference_steps=3, generator=seeded(2), output_type="np", guidance_scale=scale
            )
            for config, scale in (
                (GuardConfig(policy=Policy.uniform("block"), threshold=-1.0), 7.5),
                (GuardConfig(threshold=-1.0), 7.5),
                (GuardConfig(), 1.0),
            )
        ]
    text = caplog.text + " ".join(str(w.message) for w in caught)
    text += json.dumps([r.to_dict() for out in outputs for r in out.memorization])
    for word in SECRET.split():
        if len(word) > 3:
            assert word.lower() not in text.lower()
    assert any(r.action == "blocked" for r in outputs[0].memorization)  # the blocking path ran
    # The caller's own report object points at the words; its serialized form does not quote them.
    triggers = outputs[0].memorization[0].triggers
    assert triggers and all(SECRET[t.start : t.end] == t.text for t in triggers)
    assert "zyxwv" in json.dumps(outputs[0].memorization[0].to_dict(include_text=True)).lower()


def test_errors_raised_during_a_call_do_not_quote_the_prompt(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(decision_step=9))
    with pytest.raises(ValueError) as err:
        guarded(SECRET, num_inference_steps=2)
    assert "Zyxwv" not in str(err.value) and "Zyxwv" not in repr(err.value.__cause__)


def test_diffusers_truncation_warning_keeps_the_warning_but_not_the_text(shared_base_pipe, caplog):
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()  # another test (or app) may have silenced diffusers
    diffusers_logging.enable_propagation()  # let caplog see diffusers' records
    try:
        caplog.set_level(logging.WARNING)
        long_prompt = "a red circle " * 30 + SECRET  # far beyond 77 tokens: the secret is truncated
        memguard.guard(shared_base_pipe, GuardConfig(threshold=0.1))(
            long_prompt, num_inference_steps=2, generator=seeded(1), output_type="np"
        )
    finally:
        diffusers_logging.disable_propagation()
        diffusers_logging.set_verbosity(verbosity)
    assert "truncated" in caplog.text and "redacted by memguard" in caplog.text
    assert "zyxwv" not in caplog.text.lower()
