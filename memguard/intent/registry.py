"""`IntentRegistry`: the operator's list of concepts a prompt may ask the model to reproduce.

A registry file is JSON or YAML (safe loaders only, never pickle)::

    version: 1
    stand_in: an object                 # optional: every concept's stand-in (see below)
    concepts:
      - name: Mona Lisa                 # required, unique (case-insensitive)
        aliases: [La Gioconda]          # optional, non-empty strings
        description: Leonardo's portrait of a woman with folded hands  # optional (implicit intent)
        policy: allow                   # allow (default) | unintended
        stand_in: a painting            # optional: this concept's own

`policy: unintended` lists a concept the operator does not want reproduced even when named.
`stand_in` (per concept, or once at the top level for every concept) is an ordinary subject the model
draws in many ways, put in the concept's place when the intent resolver asks whether the rest of a
prompt memorizes by itself. Without one the concept is deleted, and a remainder with no subject left
("in a pink room") can read to a model as a complete prompt that fixes the whole image, so it scores
like a memorized one and an intended prompt is judged mixed. "" deletes (the default).
Every problem raises `RegistryError`, naming the file, the field (e.g. ``concepts[2].aliases[0]``)
and, where the parser knows it, the line.

Limits (a registry file is parsed at a bounded cost whatever it holds; see docs/limits.md):

- file size: at most `MAX_FILE_BYTES` (1 MiB, about 10,000 concepts with aliases and descriptions);
- nesting: at most 32 levels of lists/mappings (a registry uses 3);
- YAML aliases: allowed, but the document with every alias expanded holds at most `MAX_NODES`
  (100,000) values, so an alias fan-out ("billion laughs") is refused before it is expanded;
- at most `MAX_CONCEPTS` (10,000) concepts and `MAX_ALIASES` (100) aliases per concept;
- a name or alias at most `MAX_PHRASE_CHARS` (200) characters, a description `MAX_DESCRIPTION_CHARS`
  (2,000): a phrase is matched against every prompt, a description embedded for implicit intent.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..errors import MemguardTypeError, MemguardValueError, shown
from ..safe_parse import FileTooLarge, ParseError, cannot_open, compose_yaml, load_yaml, parse_json, read_limited

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_CONCEPTS = 10_000
MAX_ALIASES = 100
MAX_PHRASE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2_000

ConceptPolicy = Literal["allow", "unintended"]
CONCEPT_POLICIES: tuple[str, ...] = ("allow", "unintended")
_CONCEPT_FIELDS = frozenset({"name", "aliases", "description", "policy", "stand_in"})
_TOP_FIELDS = frozenset({"version", "concepts", "stand_in"})


class RegistryError(MemguardValueError):
    """A registry that cannot be used; the message names the field and, when known, the line.

    `field` is the field's path (e.g. ``concepts[2].aliases[0]``; None: the whole file) and
    `problem` the message without the file and line."""

    def __init__(self, message: str, *, field: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field, self.problem = field, problem if problem is not None else message


def _field_error(source: str, path: str, problem: str, lines: dict[str, int] | None = None) -> RegistryError:
    line = (lines or {}).get(path)
    return RegistryError(
        f"intent registry {source}{f', line {line}' if line else ''}: {path}: {problem}", field=path, problem=problem
    )


@dataclass(frozen=True)
class IntendedConcept:
    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    policy: ConceptPolicy = "allow"
    stand_in: str = ""  # put in the concept's place when the rest of a prompt is scored; "": deleted

    @property
    def phrases(self) -> tuple[str, ...]:
        """The name and every alias: what an explicit mention may say."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Mention:
    """A registered concept named in a prompt: characters [start, end) of the prompt."""

    concept: IntendedConcept
    start: int
    end: int
    how: Literal["explicit", "implicit"] = "explicit"
    similarity: float = 1.0


# --- normalisation: case, punctuation and plural tolerant matching ------------------------------
# a word: letters and digits with their combining marks (a decomposed "é" is "e" + U+0301, which \w
# does not match), an apostrophe inside it allowed
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_LETTERS = rf"(?:[^\W_]|[{_MARKS}])*"
_WORD = re.compile(rf"[^\W_]{_LETTERS}(?:'[^\W_]{_LETTERS})?", re.UNICODE)
_ARTICLES = frozenset({"the", "a", "an"})


def _stem(word: str) -> str:
    word = unicodedata.normalize("NFC", word).lower()  # "é" typed as e + U+0301 is the "é" of the registry
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'"})  # phones type curly ones


def words_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) for every word of `text`; punctuation is not a word."""
    text = text.translate(_APOSTROPHES)  # one character for one: offsets are unchanged
    return [(_stem(m.group()), m.start(), m.end()) for m in _WORD.finditer(text)]


def _phrase_key(phrase: str) -> tuple[str, ...]:
    words = [w for w, _, _ in words_with_offsets(phrase)]
    # "the Eiffel Tower" also matches "Eiffel Tower"; but "The Scream" keeps its article, or any
    # prompt with the word "scream" would name the painting.
    while len(words) > 2 and words[0] in _ARTICLES:
        words = words[1:]
    return tuple(words)


@dataclass(frozen=True)
class IntentRegistry:
    """Registered concepts; `find_mentions(prompt)` returns the explicit mentions in a prompt."""

    concepts: tuple[IntendedConcept, ...] = ()
    source: str = "<memory>"
    _keys: tuple[tuple[tuple[str, ...], IntendedConcept], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.concepts, (str, bytes)) or not isinstance(self.concepts, Iterable):
            raise MemguardTypeError(
                f"IntentRegistry.concepts must be IntendedConcepts, got {type(self.concepts).__name__}"
            )
        concepts = tuple(self.concepts)
        object.__setattr__(self, "concepts", concepts)
        keys = _validate_concepts(concepts, self.source)
        keys.sort(
            key=lambda item: -len(item[0])
        )  # longest phrase first: "Quiet Orchard by Ilse Varn" before "Quiet Orchard"
        object.__setattr__(self, "_keys", tuple(k for k in keys if k[0]))

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> IntentRegistry:
        """Read a JSON (``.json``) or YAML (anything else) registry file."""
        path = Path(path)
        try:
            text = read_limited(path, MAX_FILE_BYTES).decode("utf-8")
        except FileTooLarge as error:
            raise RegistryError(f"intent registry {path}: {error}") from None
        except (OSError, ValueError) as error:  # ValueError: not UTF-8, or a NUL in the path
            raise RegistryError(
                f"intent registry {path}: cannot read the file ({type(error).__name__}: {cannot_open(error)})"
            ) from None
        return cls.from_text(text, source=str(path), fmt="json" if path.suffix.lower() == ".json" else "yaml")

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>", fmt: Literal["json", "yaml"] = "yaml") -> IntentRegistry:
        if not isinstance(text, str):
            raise MemguardTypeError(
                f"intent registry {source}: expected the file's text (str), got {type(text).__name__}"
            )
        if fmt not in ("json", "yaml"):
            raise MemguardValueError(f"intent registry {source}: fmt must be 'json' or 'yaml', got {shown(fmt)}")
        if len(text) > MAX_FILE_BYTES:
            raise RegistryError(f"intent registry {source}: longer than the {MAX_FILE_BYTES:,}-character limit")
        try:
            if fmt == "json":
                data = parse_json(text, unique_keys=True)
                lines = _json_lines(text)
            else:
                data, node = load_yaml(text, max_nodes=MAX_NODES)
                lines = _field_lines(node)
        except ParseError as error:
            where = f", line {error.line}" if error.line else ""
            raise RegistryError(f"intent registry {source}{where}: {error.message}") from None
        return cls.from_dict(data, source=source, lines=lines)

    @classmethod
    def from_dict(cls, data, *, source: str = "<dict>", lines: dict[str, int] | None = None) -> IntentRegistry:
        lines = lines or {}

        def fail(path: str, message: str):
            raise _field_error(source, path, message, lines)

        def check_keys(mapping: dict, here: str | None, allowed: frozenset[str]) -> None:
            for key in mapping:
                if not isinstance(key, str):  # YAML reads `1:` or `true:` as a number or a bool
                    fail(here or "(top level)", f"field names must be strings, got {type(key).__name__} {shown(key)}")
            unknown = sorted(set(mapping) - allowed)
            if unknown:
                fail(f"{here}.{unknown[0]}" if here else unknown[0], f"unknown field (allowed: {sorted(allowed)})")

        if not isinstance(data, dict):
            fail("(top level)", f"expected a mapping with a 'concepts' list, got {type(data).__name__}")
        check_keys(data, None, _TOP_FIELDS)
        version = data.get("version", 1)
        if isinstance(version, bool) or version != 1 or not isinstance(version, int):
            fail("version", f"unsupported version {shown(version)} (this memguard reads version 1)")
        raw = data.get("concepts")
        if not isinstance(raw, list):
            fail("concepts", f"expected a list of concepts, got {type(raw).__name__}")
        if len(raw) > MAX_CONCEPTS:
            fail("concepts", f"{len(raw):,} concepts; at most {MAX_CONCEPTS:,} are allowed")
        default_stand_in = data.get("stand_in", "")
        if not isinstance(default_stand_in, str):
            fail("stand_in", f"expected a string, got {type(default_stand_in).__name__}")
        concepts = []
        for i, entry in enumerate(raw):
            here = f"concepts[{i}]"
            if not isinstance(entry, dict):
                fail(here, f"expected a mapping, got {type(entry).__name__}")
            check_keys(entry, here, _CONCEPT_FIELDS)
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                fail(f"{here}.name", "a concept needs a non-empty name")
            aliases = entry.get("aliases", [])
            if not isinstance(aliases, list):
                fail(f"{here}.aliases", "expected a list of strings")
            for j, alias in enumerate(aliases):
                if not isinstance(alias, str) or not alias.strip():
                    fail(f"{here}.aliases[{j}]", "an alias must be a non-empty string")
            description = entry.get("description", "")
            if not isinstance(description, str):
                fail(f"{here}.description", "expected a string")
            policy = entry.get("policy", "allow")
            if not isinstance(policy, str) or policy not in CONCEPT_POLICIES:
                fail(f"{here}.policy", f"unknown policy {shown(policy)} (allowed: {', '.join(CONCEPT_POLICIES)})")
            stand_in = entry.get("stand_in", default_stand_in)
            if not isinstance(stand_in, str):
                fail(f"{here}.stand_in", f"expected a string, got {type(stand_in).__name__}")
            concepts.append(
                IntendedConcept(
                    name.strip(), tuple(a.strip() for a in aliases), description, policy, " ".join(stand_in.split())
                )
            )
        try:
            return cls(tuple(concepts), source=source)
        except RegistryError as error:  # checked where every registry is: place it in the file
            if error.field is None or error.field not in lines:
                raise
            raise _field_error(source, error.field, error.problem, lines) from None

    def save(self, path: str | os.PathLike) -> None:
        data = {
            "version": 1,
            "concepts": [
                {"name": c.name, "aliases": list(c.aliases), "description": c.description, "policy": c.policy}
                | ({"stand_in": c.stand_in} if c.stand_in else {})
                for c in self.concepts
            ],
        }
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    # --- matching --------------------------------------------------------------------------------
    def find_mentions(self, prompt: str) -> list[Mention]:
        """Explicit mentions: a registered name or alias, as whole words, ignoring case, punctuation,
        plural endings and a leading article. Overlapping matches keep the longest phrase."""
        if not isinstance(prompt, str):
            raise MemguardTypeError(f"find_mentions takes the prompt as a string, got {type(prompt).__name__}")
        words = words_with_offsets(prompt)
        stems = [w for w, _, _ in words]
        taken = [False] * len(words)
        mentions = []
        for key, concept in self._keys:
            n = len(key)
            for i in range(len(words) - n + 1):
                if tuple(stems[i : i + n]) == key and not any(taken[i : i + n]):
                    taken[i : i + n] = [True] * n
                    mentions.append(Mention(concept, words[i][1], words[i + n - 1][2]))
        return sorted(mentions, key=lambda m: m.start)

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self):
        return iter(self.concepts)


def _validate_concepts(
    concepts: Sequence[IntendedConcept], source: str
) -> list[tuple[tuple[str, ...], IntendedConcept]]:
    """Check every concept; return (phrase key, concept) for each name and alias with a key."""

    def fail(path: str, message: str):
        raise _field_error(source, path, message)

    if len(concepts) > MAX_CONCEPTS:
        fail("concepts", f"{len(concepts):,} concepts; at most {MAX_CONCEPTS:,} are allowed")
    owners: dict[tuple[str, ...], int] = {}  # phrase key -> the concept that holds it (name or alias)
    keys = []

    def claim(key: tuple[str, ...], i: int, path: str, phrase: str) -> None:
        # one phrase, one concept: a mention of it must not resolve by the order of the file
        if len(key) == 1 and key[0] in _ARTICLES and not path.endswith(".name"):
            fail(path, f"{shown(phrase)} is only an article; it would match every prompt that has one")
        if owners.get(key, i) != i:
            what = "concept name" if path.endswith(".name") else "alias"
            fail(path, f"duplicate {what} {shown(phrase)}: concepts[{owners[key]}] already has it")
        owners[key] = i

    for i, concept in enumerate(concepts):
        here = f"concepts[{i}]"
        if not isinstance(concept, IntendedConcept):
            fail(here, f"expected an IntendedConcept, got {type(concept).__name__}")
        key = _phrase_key_of(concept.name, f"{here}.name", fail)
        if not isinstance(concept.aliases, (tuple, list)):
            fail(f"{here}.aliases", f"expected a tuple of strings, got {type(concept.aliases).__name__}")
        if len(concept.aliases) > MAX_ALIASES:
            fail(f"{here}.aliases", f"{len(concept.aliases):,} aliases; at most {MAX_ALIASES} are allowed")
        claim(key, i, f"{here}.name", concept.name)
        keys.append((key, concept))
        for j, alias in enumerate(concept.aliases):
            alias_key = _phrase_key_of(alias, f"{here}.aliases[{j}]", fail)
            claim(alias_key, i, f"{here}.aliases[{j}]", alias)
            keys.append((alias_key, concept))
        if not isinstance(concept.description, str):
            fail(f"{here}.description", f"expected a string, got {type(concept.description).__name__}")
        if len(concept.description) > MAX_DESCRIPTION_CHARS:
            fail(f"{here}.description", f"longer than {MAX_DESCRIPTION_CHARS:,} characters")
        if concept.policy not in CONCEPT_POLICIES:
            fail(f"{here}.policy", f"unknown policy {shown(concept.policy)}")
        if not isinstance(concept.stand_in, str):
            fail(f"{here}.stand_in", f"expected a string, got {type(concept.stand_in).__name__}")
        if len(concept.stand_in) > MAX_PHRASE_CHARS:
            fail(f"{here}.stand_in", f"longer than {MAX_PHRASE_CHARS} characters")
    return keys


def _phrase_key_of(phrase, path: str, fail) -> tuple[str, ...]:
    """The key of a name or alias: a string of at most MAX_PHRASE_CHARS characters holding a word."""
    what = "a name" if path.endswith(".name") else "an alias"
    if not isinstance(phrase, str):
        fail(path, f"{what} must be a string, got {type(phrase).__name__}")
    if len(phrase) > MAX_PHRASE_CHARS:
        fail(path, f"{what} is longer than {MAX_PHRASE_CHARS} characters")
    key = _phrase_key(phrase)
    if not key:
        fail(path, f"{what} must contain a word")
    return key


def _field_lines(node) -> dict[str, int]:
    """1-based line of every field the validation can name, in a composed registry document: the
    top-level fields, each concept, its fields and its aliases. Only that shape is walked, so the
    cost is bounded by the document's size whatever its aliases share."""
    if node is None:
        return {}
    lines = {"(top level)": _line(node)}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        lines[key.value] = _line(key)
        if key.value != "concepts" or not isinstance(value, yaml.SequenceNode):
            continue
        for i, entry in enumerate(value.value):
            here = f"concepts[{i}]"
            lines[here] = _line(entry)
            if not isinstance(entry, yaml.MappingNode):
                continue
            for field_key, field_value in entry.value:
                if not isinstance(field_key, yaml.ScalarNode):
                    continue
                path = f"{here}.{field_key.value}"
                lines[path] = _line(field_key)
                if field_key.value == "aliases" and isinstance(field_value, yaml.SequenceNode):
                    for j, alias in enumerate(field_value.value):
                        lines[f"{path}[{j}]"] = _line(alias)
    return lines


def _line(node) -> int:
    return node.start_mark.line + 1


def _json_lines(text: str) -> dict[str, int]:
    """1-based line of every field path in a JSON document (JSON is YAML, so PyYAML can place it)."""
    try:
        return _field_lines(compose_yaml(text, max_nodes=MAX_NODES))
    except ParseError:  # valid JSON that PyYAML cannot read (rare): fields are still named
        return {}


def as_registry(value: IntentRegistry | str | os.PathLike | Iterable[IntendedConcept] | None) -> IntentRegistry | None:
    if value is None or isinstance(value, IntentRegistry):
        return value
    if isinstance(value, (str, os.PathLike)):
        return IntentRegistry.load(value)
    if not isinstance(value, Iterable):
        raise MemguardTypeError(
            f"a registry must be an IntentRegistry, a file path or IntendedConcepts, got {type(value).__name__}"
        )
    return IntentRegistry(tuple(value))
