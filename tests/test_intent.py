"""Intent: the registry (loading, bad input, matching), trigger attribution and the verdict."""

import math
import sys

import numpy as np
import pytest
import torch

from memguard.intent import (
    ImplicitIntentUnavailable,
    ImplicitMatcher,
    IntendedConcept,
    IntentRegistry,
    IntentResolver,
    OpenClipTextEmbedder,
    RegistryError,
)
from memguard.intent.attribution import token_offsets, trigger_spans, word_shares
from memguard.testbed.tokenizer import load_clip_tokenizer

YAML = """\
version: 1
concepts:
  - name: Mona Lisa
    aliases: [La Gioconda]
    description: Leonardo's portrait of a woman with folded hands
  - name: Eiffel Tower
    policy: allow
  - name: Brand X Logo
    policy: unintended
"""


def _registry() -> IntentRegistry:
    return IntentRegistry.from_text(YAML)


def test_yaml_and_json_registries_load_the_same_concepts(tmp_path):
    registry = _registry()
    path = tmp_path / "registry.json"
    registry.save(path)
    again = IntentRegistry.load(path)
    assert [c.name for c in again] == ["Mona Lisa", "Eiffel Tower", "Brand X Logo"]
    assert again.concepts == registry.concepts
    yaml_path = tmp_path / "registry.yaml"
    yaml_path.write_text(YAML)
    assert IntentRegistry.load(yaml_path).concepts == registry.concepts


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("the MONA-LISA, smiling", ["MONA-LISA"]),  # case and punctuation
        ("two Eiffel Towers at dusk", ["Eiffel Towers"]),  # plural
        ("la gioconda in a garden", ["la gioconda"]),  # alias
        ("the Eiffel Tower next to the Mona Lisa", ["Eiffel Tower", "Mona Lisa"]),
        ("a monastery in Lisbon", []),  # no partial-word matches
        ("an eiffelian tower", []),
    ],
)
def test_explicit_mentions_are_case_punctuation_and_plural_tolerant(prompt, expected):
    mentions = _registry().find_mentions(prompt)
    assert [prompt[m.start : m.end] for m in mentions] == expected


def test_a_one_word_name_keeps_its_article_and_curly_apostrophes_match():
    registry = IntentRegistry(
        (IntendedConcept("The Scream"), IntendedConcept("The Birth of Venus", ("Botticelli's Venus",)))
    )
    assert registry.find_mentions("Scream 4 movie poster") == []  # not Munch's painting
    assert [m.concept.name for m in registry.find_mentions("the Scream, by Munch")] == ["The Scream"]
    (mention,) = registry.find_mentions("Botticelli\u2019s Venus as a statue")  # typed on a phone
    assert mention.concept.name == "The Birth of Venus" and (mention.start, mention.end) == (0, 18)
    assert [m.concept.name for m in registry.find_mentions("Birth of Venus, a print")] == ["The Birth of Venus"]


def test_the_longest_registered_phrase_wins():
    registry = IntentRegistry((IntendedConcept("Quiet Orchard"), IntendedConcept("Quiet Orchard by Ilse Varn")))
    (mention,) = registry.find_mentions("Quiet Orchard by Ilse Varn at dusk")
    assert mention.concept.name == "Quiet Orchard by Ilse Varn"


@pytest.mark.parametrize(
    "text, fmt, match",
    [
        (YAML + "  - name: mona lisa\n", "yaml", r"line 10: concepts\[3\]\.name: duplicate concept name 'mona lisa'"),
        ("version: 1\nconcepts:\n  - name: A\n    aliases: ['ok', '  ']\n", "yaml", r"concepts\[0\]\.aliases\[1\]"),
        (
            "version: 1\nconcepts:\n  - name: A\n    policy: maybe\n",
            "yaml",
            r"line 4: concepts\[0\]\.policy: unknown policy 'maybe'",
        ),
        ("version: 1\nconcepts:\n  - name: A\n    colour: red\n", "yaml", r"concepts\[0\]\.colour: unknown field"),
        ("version: 1\nconcepts:\n  - name: [A\n", "yaml", r"line \d+: invalid YAML"),
        ('{"concepts": [{"name": "A"},\n {"name": "A"}]}', "json", r"line 2: concepts\[1\]\.name: duplicate"),
        ('{"concepts": [{"name": "A"}\n "x"]}', "json", r"line 2: invalid JSON"),
        ("concepts: {name: A}\n", "yaml", r"concepts: expected a list"),
        ("version: 2\nconcepts: []\n", "yaml", r"version: unsupported version"),
        # one phrase, one concept: which concept a mention names must not depend on the file's order
        (
            "version: 1\nconcepts:\n  - name: Spire\n  - name: Tower\n    aliases: [spires]\n",
            "yaml",
            r"concepts\[1\]\.aliases\[0\]: duplicate alias 'spires': concepts\[0\] already has it",
        ),
        (
            "version: 1\nconcepts:\n  - name: A B\n    aliases: [The]\n",
            "yaml",
            r"aliases\[0\]: 'The' is only an article",
        ),
        # a repeated key is a typo, not a choice of the last value
        ("version: 1\nconcepts:\n  - name: A\n    name: B\n", "yaml", r"line 4: a mapping repeats the key 'name'"),
        ('{"concepts": [{"name": "A", "name": "B"}]}', "json", r"an object repeats the key 'name'"),
    ],
)
def test_bad_registries_name_the_line_or_field(text, fmt, match):
    with pytest.raises(RegistryError, match=match):
        IntentRegistry.from_text(text, fmt=fmt)


def test_unreadable_registry_files_raise_a_registry_error(tmp_path):
    with pytest.raises(RegistryError, match="missing.yaml: cannot read the file"):
        IntentRegistry.load(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RegistryError, match="binary.json: cannot read"):
        IntentRegistry.load(binary)
    with pytest.raises(RegistryError, match="cannot read"):
        IntentRegistry.load(tmp_path)  # a directory


def test_registry_loading_is_safe_no_python_objects():
    with pytest.raises(RegistryError, match="invalid YAML"):
        IntentRegistry.from_text("!!python/object/apply:os.system ['echo pwned']\n")


# --- attribution ----------------------------------------------------------------------------------
def test_sub_word_tokens_merge_into_words_and_words_into_spans():
    tokenizer = load_clip_tokenizer()
    prompt = "Walking with Delia Frostwick, today"
    offsets = token_offsets(tokenizer, prompt, 16)
    scores = torch.zeros(16)
    for k, (a, b) in enumerate(offsets):
        if b > a and prompt[a:b].lower() in ("del", "ia", "delia", "frost", "wick"):
            scores[k] = 5.0  # "Delia Frostwick" carries the signal, split into sub-word tokens
        elif b > a:
            scores[k] = 0.5
    shares = word_shares(prompt, scores, offsets)
    assert [prompt[w.start : w.end] for w in shares] == ["Walking", "with", "Delia", "Frostwick", "today"]
    assert math.isclose(sum(w.share for w in shares), 1.0, rel_tol=1e-6)
    spans = trigger_spans(prompt, shares)
    assert [(s.text, s.start, s.end) for s in spans] == [("Delia Frostwick", 13, 28)]
    assert spans[0].share > 0.8


# --- the verdict --------------------------------------------------------------------------------
def _resolve(prompt, residual, registry=None):
    tokenizer = load_clip_tokenizer()
    offsets = token_offsets(tokenizer, prompt, 32)
    scores = torch.tensor([1.0 if b > a else 0.0 for a, b in offsets])
    resolver = IntentResolver(registry or _registry())
    return resolver.resolve(
        prompt, memorized=True, token_scores=scores, offsets=offsets, threshold=0.5, residual=residual
    )


def test_verdicts_follow_the_residual_of_the_prompt_without_its_concepts():
    asked = []
    verdict = _resolve("the Mona Lisa on a beach", lambda text: asked.append(text) or 0.1)
    assert asked == ["the on a beach"]
    assert verdict.intent == "intended"
    assert [(t.text, t.concept, t.intended) for t in verdict.triggers] == [("Mona Lisa", "Mona Lisa", True)]

    verdict = _resolve("the Mona Lisa on the Harbor Gazette cover", lambda text: 0.9 if "Gazette" in text else 0.3)
    assert verdict.intent == "mixed"
    assert verdict.reference_score == 0.3  # "Mona Lisa" alone
    assert any(t.intended for t in verdict.triggers) and any(not t.intended for t in verdict.triggers)
    # a trigger span around the mention keeps its words outside it, as unintended triggers
    assert "on the Harbor Gazette cover" in [t.text for t in verdict.triggers if not t.intended]
    assert verdict.judge_resample(0.25, 0.2).intent == "intended"  # no more than the concept alone
    assert verdict.judge_resample(0.6, 0.2).intent == "mixed"
    assert verdict.judge_resample(0.1, 0.2).intent == "none"

    verdict = _resolve("Walking the Amber Road", lambda text: pytest.fail("no concept: no residual"))
    assert verdict.intent == "unintended" and verdict.triggers and not any(t.intended for t in verdict.triggers)

    verdict = _resolve("the Brand X Logo on a mug", lambda text: 0.0)
    assert verdict.intent == "unintended"  # a concept the operator marked unintended
    assert any(t.concept == "Brand X Logo" and not t.intended for t in verdict.triggers)


def test_the_rest_is_scored_with_each_concept_replaced_by_its_stand_in():
    registry = IntentRegistry.from_text(
        "version: 1\nstand_in: an object\nconcepts:\n  - name: Mona Lisa\n    stand_in: a painting\n"
        "  - name: Eiffel Tower\n"
    )
    assert [c.stand_in for c in registry] == ["a painting", "an object"]  # its own, else the file's
    asked = []
    _resolve("the Mona Lisa beside the Eiffel Tower, pink backdrop", lambda text: asked.append(text) or 0.1, registry)
    assert asked == ["a painting beside an object, pink backdrop"]  # the stand-in brings its own article

    # A remainder with no subject left reads as a complete prompt: scored as one, it can memorize
    # where the same words around an ordinary subject do not. The stand-in decides the verdict.
    def subjectless_memorizes(text):
        return 0.1 if "painting" in text else 0.9

    prompt = "the Mona Lisa, top, pink backdrop"
    assert _resolve(prompt, subjectless_memorizes).intent == "mixed"  # _registry() has no stand-ins
    assert _resolve(prompt, subjectless_memorizes, registry).intent == "intended"
    # a prompt that is only the concept has no rest to memorize, stand-in or not
    assert _resolve("Mona Lisa", lambda text: pytest.fail("no rest: no residual"), registry).intent == "intended"


def test_stand_ins_survive_a_round_trip_and_bad_ones_name_their_field(tmp_path):
    registry = IntentRegistry((IntendedConcept("Mona Lisa", stand_in="a painting"), IntendedConcept("Eiffel Tower")))
    registry.save(tmp_path / "r.json")
    assert IntentRegistry.load(tmp_path / "r.json").concepts == registry.concepts
    with pytest.raises(RegistryError, match=r"line 2: stand_in: expected a string"):
        IntentRegistry.from_text("version: 1\nstand_in: [a, b]\nconcepts: []\n")
    with pytest.raises(RegistryError, match=r"concepts\[0\]\.stand_in: expected a string"):
        IntentRegistry.from_text("version: 1\nconcepts:\n  - name: A\n    stand_in: 3\n")
    with pytest.raises(RegistryError, match=r"concepts\[0\]\.stand_in: longer than 200"):
        IntentRegistry((IntendedConcept("A", stand_in="x" * 201),))


def test_a_mention_inside_a_flagged_prompt_splits_its_trigger_span():
    # every word carries the same share of the signal: the span around the mention keeps both sides
    prompt = "a poster of the Mona Lisa in a subway station"
    verdict = _resolve(prompt, lambda text: 0.9)  # the rest still memorizes
    assert verdict.intent == "mixed"
    assert [(t.text, t.intended) for t in verdict.triggers] == [
        ("a poster of the", False),
        ("Mona Lisa", True),
        ("in a subway station", False),
    ]
    verdict = _resolve(prompt, lambda text: 0.1)  # the mention explains the signal
    assert verdict.intent == "intended" and [(t.text, t.intended) for t in verdict.triggers] == [("Mona Lisa", True)]


def test_not_memorized_and_embeds_only_prompts():
    resolver = IntentResolver(_registry())
    kwargs = dict(token_scores=None, offsets=None, threshold=0.5, residual=lambda t: 0.0)
    assert resolver.resolve("the Mona Lisa", memorized=False, **kwargs).intent == "none"
    verdict = resolver.resolve(None, memorized=True, **kwargs)
    assert verdict.intent == "unintended" and "prompt_embeds" in verdict.note


# --- implicit intent ------------------------------------------------------------------------------
class BagOfWords:
    """A deterministic toy text embedder: hashed word counts (enough to test the faiss plumbing)."""

    name = "bag-of-words"

    def embed(self, texts):
        vectors = np.zeros((len(texts), 64), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace("'s", "").split():
                vectors[i, sum(map(ord, word.strip(".,"))) % 64] += 1
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-9)


def test_implicit_mentions_match_descriptions_above_a_calibrated_threshold():
    registry = _registry()
    benign = ["a red bicycle by a lake", "two cats on a sofa", "a bowl of fruit on a table", "a snowy mountain road"]
    matcher = ImplicitMatcher.calibrate(registry, BagOfWords(), benign, target_fpr=0.0)
    assert all(not matcher.find(p) for p in benign)
    prompt = "oil painting: leonardo portrait of a woman with folded hands, museum light"
    (mention,) = matcher.find(prompt)
    assert mention.concept.name == "Mona Lisa" and mention.how == "implicit"
    assert "portrait of a woman" in prompt[mention.start : mention.end]
    resolver = IntentResolver(registry, matcher)
    verdict = resolver.resolve(
        prompt, memorized=True, token_scores=None, offsets=None, threshold=0.5, residual=lambda t: 0.0
    )
    assert verdict.intent == "intended"


def test_open_clip_path_says_when_it_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import fails as it does without torchvision
    with pytest.raises(ImplicitIntentUnavailable, match="open_clip is unavailable"):
        OpenClipTextEmbedder()


def test_a_decomposed_accent_matches_its_composed_form_and_stays_one_word():
    import unicodedata

    registry = IntentRegistry((IntendedConcept(unicodedata.normalize("NFD", "Café Noir")),))
    assert [(m.start, m.end) for m in registry.find_mentions("a Café Noir poster")] == [(2, 11)]
    decomposed = unicodedata.normalize("NFD", "a Café Noir poster")  # as macOS and some keyboards write it
    (mention,) = IntentRegistry((IntendedConcept("Café Noir"),)).find_mentions(decomposed)
    assert decomposed[mention.start : mention.end] == unicodedata.normalize("NFD", "Café Noir")
    with pytest.raises(TypeError, match="find_mentions takes the prompt as a string, got NoneType"):
        registry.find_mentions(None)
