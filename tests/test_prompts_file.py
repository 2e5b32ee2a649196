"""The prompt-file parser behind `memguard scan` and `memguard calibrate`."""

import json
from pathlib import Path

import pytest

from memguard.prompts_file import Prompt, PromptFileError, prompts_digest, read_prompts

SECRET = "Zyxwv Private Diary Page"
PEERS = Path(__file__).parent.parent.parent / "shared" / "data" / "peers" / "MemAttn"


def test_plain_lines_skip_blank_lines_and_keep_file_line_numbers(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\n   \n two words \r\nlast without newline")
    assert read_prompts(path) == [
        Prompt(0, 1, "a red circle"),
        Prompt(1, 4, " two words "),  # offsets of trigger spans refer to the text as written
        Prompt(2, 5, "last without newline"),
    ]


def test_jsonl_reads_the_caption_field(tmp_path):
    path = tmp_path / "log.jsonl"
    rows = [{"caption": "first", "user": 1}, {"caption": "second"}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n\n" + json.dumps(rows[1]) + "\n")
    assert read_prompts(path) == [Prompt(0, 1, "first"), Prompt(1, 3, "second")]
    assert [p.text for p in read_prompts(path, field="caption", fmt="jsonl")] == ["first", "second"]


def test_jsonl_is_recognized_without_the_suffix_and_other_fields_can_be_named(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text('{"prompt": "a blue square"}\n')
    assert read_prompts(path, field="prompt") == [Prompt(0, 1, "a blue square")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"caption": "ok"}\n{"text": "' + SECRET + '"}\n', "log.jsonl:2: missing the 'caption' field"),
        ('{"caption": "ok"}\n\n{"caption": "' + SECRET + '"\n', "log.jsonl:3: not valid JSON"),
        ('{"caption": "ok"}\n["' + SECRET + '"]\n', "log.jsonl:2: expected a JSON object"),
        ('{"caption": ""}\n', "log.jsonl:1: 'caption' must be a non-empty string"),
        ('{"caption": 7}\n', "log.jsonl:1: 'caption' must be a non-empty string"),
    ],
)
def test_bad_jsonl_names_the_line_but_not_its_content(tmp_path, body, message):
    path = tmp_path / "log.jsonl"
    path.write_text(body)
    with pytest.raises(PromptFileError, match=message) as caught:
        read_prompts(path)
    assert SECRET not in str(caught.value)


def test_missing_empty_and_binary_files_are_errors(tmp_path):
    with pytest.raises(PromptFileError, match="cannot read prompt file"):
        read_prompts(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(PromptFileError, match="has no prompts"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PromptFileError, match="not UTF-8"):
        read_prompts(tmp_path / "binary.txt")


def test_digest_changes_with_text_and_order():
    a, b = Prompt(0, 1, "a"), Prompt(1, 2, "b")
    assert prompts_digest([a, b]) == prompts_digest([Prompt(0, 1, "a"), Prompt(1, 2, "b")])
    assert prompts_digest([a, b]) != prompts_digest([b, a])
    assert prompts_digest([a]) != prompts_digest([Prompt(0, 1, "a ")])


@pytest.mark.skipif(not PEERS.is_dir(), reason="peer prompt lists are not on this machine")
def test_the_peer_prompt_lists_read_one_prompt_a_line():
    """benchmarks/detection.py reads the published detectors' prompt lists with this parser."""
    memorized, benign = read_prompts(PEERS / "sd1_mem345.txt"), read_prompts(PEERS / "group_nomem500.txt")
    assert len(memorized) == 345 and len(benign) == 500 and all(p.text.strip() for p in memorized + benign)


def test_a_first_prompt_in_braces_is_a_prompt_and_a_lone_cr_ends_a_line(tmp_path):
    path = tmp_path / "prompts"  # no suffix: the first line decides, and it is no JSON object
    path.write_text("{masterpiece}, a cat\ra dog\r\n{a: b}\n")
    assert [p.text for p in read_prompts(path)] == ["{masterpiece}, a cat", "a dog", "{a: b}"]
    assert [p.line for p in read_prompts(path)] == [1, 2, 3]
    with pytest.raises(PromptFileError, match="prompts:1: not valid JSON"):
        read_prompts(path, fmt="jsonl")  # asked for JSONL, it is refused, not guessed


def test_the_prompt_digest_tells_apart_lists_that_share_their_characters_or_move_lines():
    from memguard.prompts_file import Prompt, prompts_digest

    def digest(*texts, first_line=1):
        return prompts_digest([Prompt(i, first_line + i, text) for i, text in enumerate(texts)])

    assert digest("a\0", "b") != digest("a", "\0b")  # NUL is text in a prompt line
    assert digest("ab", "c") != digest("a", "bc")
    assert digest("a", "b") != digest("a", "b", first_line=2)  # records carry line numbers
    assert digest("a", "b") == digest("a", "b")


def test_a_scan_record_of_the_longest_prompt_line_with_its_text_reads_back(tmp_path):
    # the longest line the reader takes, of 4-byte characters, written twice (--include-text: the prompt
    # and a trigger span covering it): what the scan writes, its resume must read
    from memguard.prompts_file import MAX_LINE_CHARS
    from memguard.report import MemorizationReport, Trigger
    from memguard.scan import _done_indices, record, record_line

    text = "\U0001f600" * MAX_LINE_CHARS
    report = MemorizationReport(
        score=2.0, threshold=1.0, memorized=True, decided_at_step=1, triggers=[Trigger(text, 0, len(text), 1.0)]
    )
    out = tmp_path / "scan.jsonl"
    out.write_text(record_line(record(Prompt(0, 1, text), report, include_text=True)), encoding="utf-8")
    assert _done_indices(out, 1) == {0}
