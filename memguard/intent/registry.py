"""`IntentRegistry`: the operator's list of concepts a prompt may ask the model to reproduce.

A registry file is JSON or YAML (safe loaders only, never pickle)::

    version: 1
    concepts:
      - name: Mona Lisa                 # required, unique (case-insensitive)
        aliases: [La Gioconda]          # optional, non-empty strings
        description: Leonardo's portrait of a woman with folded hands  # optional (implicit intent)
        policy: allow                   # allow (default) | unintended

`policy: unintended` lists a concept the operator does not want reproduced even when named.
Every problem raises `RegistryError`, naming the file, the field (e.g. ``concepts[2].aliases[0]``)
and, where the parser knows it, the line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

ConceptPolicy = Literal["allow", "unintended"]
CONCEPT_POLICIES: tuple[str, ...] = ("allow", "unintended")
_CONCEPT_FIELDS = frozenset({"name", "aliases", "description", "policy"})
_TOP_FIELDS = frozenset({"version", "concepts"})


class RegistryError(ValueError):
    """A registry that cannot be used; the message names the field and, when known, the line."""


@dataclass(frozen=True)
class IntendedConcept:
    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    policy: ConceptPolicy = "allow"

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
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_ARTICLES = frozenset({"the", "a", "an"})


def _stem(word: str) -> str:
    word = word.lower()
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
        concepts = tuple(self.concepts)
        object.__setattr__(self, "concepts", concepts)
        _validate_concepts(concepts, self.source, lines={})
        keys = [(_phrase_key(p), c) for c in concepts for p in c.phrases]
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
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RegistryError(
                f"intent registry {path}: cannot read the file ({type(error).__name__}: {error})"
            ) from None
        return cls.from_text(text, source=str(path), fmt="json" if path.suffix.lower() == ".json" else "yaml")

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>", fmt: Literal["json", "yaml"] = "yaml") -> IntentRegistry:
        lines: dict[str, int] = {}
        if fmt == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise RegistryError(
                    f"intent registry {source}, line {error.lineno}: invalid JSON ({error.msg})"
                ) from None
            lines = _json_lines(text)
        else:
            try:
                node = yaml.compose(text, Loader=yaml.SafeLoader)
                data = yaml.safe_load(text)
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark is not None else ""
                problem = getattr(error, "problem", None) or str(error)
                raise RegistryError(f"intent registry {source}{where}: invalid YAML ({problem})") from None
            lines = _yaml_lines(node)
        return cls.from_dict(data, source=source, lines=lines)

    @classmethod
    def from_dict(cls, data, *, source: str = "<dict>", lines: dict[str, int] | None = None) -> IntentRegistry:
        lines = lines or {}

        def fail(path: str, message: str):
            line = lines.get(path)
            raise RegistryError(f"intent registry {source}{f', line {line}' if line else ''}: {path}: {message}")

        if not isinstance(data, dict):
            fail("(top level)", f"expected a mapping with a 'concepts' list, got {type(data).__name__}")
        unknown = sorted(set(data) - _TOP_FIELDS)
        if unknown:
            fail(str(unknown[0]), f"unknown field (allowed: {sorted(_TOP_FIELDS)})")
        if data.get("version", 1) != 1:
            fail("version", f"unsupported version {data.get('version')!r} (this memguard reads version 1)")
        raw = data.get("concepts")
        if not isinstance(raw, list):
            fail("concepts", f"expected a list of concepts, got {type(raw).__name__}")
        concepts = []
        for i, entry in enumerate(raw):
            here = f"concepts[{i}]"
            if not isinstance(entry, dict):
                fail(here, f"expected a mapping, got {type(entry).__name__}")
            unknown = sorted(set(entry) - _CONCEPT_FIELDS)
            if unknown:
                fail(f"{here}.{unknown[0]}", f"unknown field (allowed: {sorted(_CONCEPT_FIELDS)})")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                fail(f"{here}.name", "a concept needs a non-empty name")
            aliases = entry.get("aliases", [])
            if isinstance(aliases, str) or not isinstance(aliases, list):
                fail(f"{here}.aliases", "expected a list of strings")
            for j, alias in enumerate(aliases):
                if not isinstance(alias, str) or not alias.strip():
                    fail(f"{here}.aliases[{j}]", "an alias must be a non-empty string")
            description = entry.get("description", "")
            if not isinstance(description, str):
                fail(f"{here}.description", "expected a string")
            policy = entry.get("policy", "allow")
            if policy not in CONCEPT_POLICIES:
                fail(f"{here}.policy", f"unknown policy {policy!r} (allowed: {', '.join(CONCEPT_POLICIES)})")
            concepts.append(IntendedConcept(name.strip(), tuple(a.strip() for a in aliases), description, policy))
        _validate_concepts(concepts, source, lines)
        return cls(tuple(concepts), source=source)

    def save(self, path: str | os.PathLike) -> None:
        data = {
            "version": 1,
            "concepts": [
                {"name": c.name, "aliases": list(c.aliases), "description": c.description, "policy": c.policy}
                for c in self.concepts
            ],
        }
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    # --- matching --------------------------------------------------------------------------------
    def find_mentions(self, prompt: str) -> list[Mention]:
        """Explicit mentions: a registered name or alias, as whole words, ignoring case, punctuation,
        plural endings and a leading article. Overlapping matches keep the longest phrase."""
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


def _validate_concepts(concepts: Sequence[IntendedConcept], source: str, lines: dict[str, int]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for i, concept in enumerate(concepts):
        if not isinstance(concept, IntendedConcept):
            raise RegistryError(f"intent registry {source}: concepts[{i}]: expected an IntendedConcept")
        for j, alias in enumerate(concept.aliases):
            if not _phrase_key(alias):
                path = f"concepts[{i}].aliases[{j}]"
                line = lines.get(path)
                raise RegistryError(
                    f"intent registry {source}{f', line {line}' if line else ''}: {path}: an alias must contain a word"
                )
        if concept.policy not in CONCEPT_POLICIES:
            raise RegistryError(f"intent registry {source}: concepts[{i}].policy: unknown policy {concept.policy!r}")
        key = _phrase_key(concept.name)
        if not key:
            raise RegistryError(f"intent registry {source}: concepts[{i}].name: a name must contain a word")
        if key in seen:
            path = f"concepts[{i}].name"
            line = lines.get(path)
            raise RegistryError(
                f"intent registry {source}{f', line {line}' if line else ''}: {path}: duplicate concept name "
                f"{concept.name!r} (also concepts[{seen[key]}])"
            )
        seen[key] = i


def _yaml_lines(node, path: str = "") -> dict[str, int]:
    """1-based line of every field path in a composed YAML document."""
    lines: dict[str, int] = {}
    if node is None:
        return lines
    lines[path or "(top level)"] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            lines.update(_yaml_lines(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            lines.update(_yaml_lines(value, f"{path}[{i}]"))
    return lines


def _json_lines(text: str) -> dict[str, int]:
    """1-based line of every field path in a JSON document (JSON is YAML, so PyYAML can place it)."""
    try:
        return _yaml_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:  # valid JSON that PyYAML cannot read (rare): fields are still named
        return {}


def as_registry(value: IntentRegistry | str | os.PathLike | Iterable[IntendedConcept] | None) -> IntentRegistry | None:
    if value is None or isinstance(value, IntentRegistry):
        return value
    if isinstance(value, (str, os.PathLike)):
        return IntentRegistry.load(value)
    return IntentRegistry(tuple(value))
