"""Prompts never reach logs, warnings, reports or exception messages."""

import json
import logging
import warnings

import pytest
import torch
from helpers import seeded

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


def test_importing_memguard_changes_no_logger():
    import subprocess
    import sys

    script = (
        "import logging, memguard, memguard.pipelines\n"
        "names = [n for n in logging.root.manager.loggerDict if n.startswith('diffusers')]\n"
        "ours = [f for n in names for f in logging.getLogger(n).filters if type(f).__module__.startswith('memguard')]\n"
        "print(len(ours), len(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    filters, loggers = map(int, done.stdout.split())
    assert loggers > 0 and filters == 0


def test_a_plain_pipeline_keeps_its_own_log_text_outside_guarded_calls(shared_base_pipe, caplog):
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()
    diffusers_logging.enable_propagation()
    long_prompt = "a red circle " * 30 + SECRET
    try:
        caplog.set_level(logging.WARNING)
        memguard.guard(shared_base_pipe)(long_prompt, num_inference_steps=2, generator=seeded(1), output_type="np")
        guarded_text, _ = caplog.text, caplog.clear()
        shared_base_pipe(long_prompt, num_inference_steps=2, generator=seeded(1), output_type="np")
    finally:
        diffusers_logging.disable_propagation()
        diffusers_logging.set_verbosity(verbosity)
    assert "zyxwv" not in guarded_text.lower()
    assert "zyxwv" in caplog.text.lower()  # the unguarded call's record is diffusers' own, untouched


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(negative_prompt=[SECRET, "blurry", "dark"]),  # three negative prompts for two prompts
        dict(prompt_embeds=torch.zeros(2, 77, 32)),  # prompt and prompt_embeds together
    ],
)
def test_the_pipelines_own_errors_lose_the_prompt_text_but_keep_their_type(shared_base_pipe, kwargs):
    with pytest.raises(ValueError) as err:
        memguard.guard(shared_base_pipe)([SECRET, SECRET], num_inference_steps=2, **kwargs)
    message = str(err.value)
    assert "zyxwv" not in message.lower() and "redacted by memguard" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_short_prompt_is_redacted_as_a_whole_word_and_overlapping_prompts_as_one_span():
    from memguard.privacy import REDACTED, redact

    # a one-letter negative prompt must not turn diffusers' argument names into noise
    message = redact("`negative_prompt` got a list of 3, expected 2", ["a"])
    assert message == f"`negative_prompt` got {REDACTED} list of 3, expected 2"
    # two prompts that overlap in the message leave no part of either visible, nor a broken marker
    assert redact("saw 'x red circle' by then", ["red circle", "x red", "by"]) == f"saw '{REDACTED}' {REDACTED} then"
    assert redact("quoted 'tab\\there'", ["tab\there"]) == f"quoted '{REDACTED}'"  # as repr escapes it
