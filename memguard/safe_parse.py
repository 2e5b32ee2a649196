"""Reading the files memguard is given at a bounded cost, whatever they hold.

Three things make a small file expensive or crash a parser, and each is capped here before the
parser sees it:

- size: a file is read only up to its limit (plus one byte, to tell it was longer);
- nesting: JSON and YAML parsers recurse once per level, so a deep file ends in RecursionError;
  documents nested deeper than `MAX_NESTING` are refused;
- YAML aliases: an alias repeats a whole anchored subtree, so a few hundred bytes can stand for
  billions of nodes ("billion laughs"); a YAML document is refused when, with every alias
  expanded, it would hold more than its caller's node limit. The check reads the event stream
  once, without building anything.

Callers turn `ParseError` into their own error, naming their file and field (see docs/limits.md).
"""

from __future__ import annotations

import json
import os

import yaml

from .errors import shown

MAX_NESTING = 32  # levels of lists/mappings: memguard's files use at most 3

# libyaml when it is installed (pyyaml's wheels bundle it): the same documents, several times faster
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ParseError(Exception):
    """A file memguard will not parse; `line` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class JsonSyntaxError(ParseError):
    """Text that is not JSON; `reason` is the decoder's (it never quotes the text), `column` 1-based."""

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"invalid JSON ({reason}, column {column})", line)
        self.reason, self.column = reason, column


class FileTooLarge(Exception):
    """A file past its size limit (nothing after limit + 1 bytes was read)."""


def read_limited(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of `path`. Raises FileTooLarge past `limit`; OSError or ValueError (a NUL in the
    path) when it cannot be opened. A stat size is not trusted: pipes and /proc files report 0."""
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"larger than the {limit:,}-byte limit")
    return data


def cannot_open(error: Exception) -> str:
    """Why a file could not be opened, without a traceback's worth of detail."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class IntegerTooLong:
    """Stands in for a JSON integer with more digits than Python converts (4300 by default), so
    the field holding it is named by the type check that refuses it, not by a bare ValueError."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits:,} digits (too long to read)"


def _read_int(digits: str):
    try:
        return int(digits)
    except ValueError:  # past sys.get_int_max_str_digits(); reading it would cost quadratic time anyway
        return IntegerTooLong(len(digits))


def type_name(value) -> str:
    """The kind of `value`, for a message saying it has the wrong type."""
    return repr(value) if isinstance(value, IntegerTooLong) else type(value).__name__


def parse_json(text: str, *, max_nesting: int = MAX_NESTING, unique_keys: bool = False):
    """`json.loads`, with every failure of a hostile document as ParseError (no content quoted).

    An integer too long to convert becomes an `IntegerTooLong`, which any type check refuses.
    `unique_keys`: an object that repeats a key is refused (json keeps the last one silently); for
    files a person edits, where the repeat is a mistake (a registry, a calibration)."""
    try:
        value = json.loads(text, parse_int=_read_int, object_pairs_hook=_unique_object if unique_keys else None)
    except json.JSONDecodeError as error:
        raise JsonSyntaxError(error.msg, error.lineno, error.colno) from None
    except RecursionError:
        raise ParseError(f"nested deeper than {max_nesting} levels") from None
    if nesting(value, max_nesting) > max_nesting:
        raise ParseError(f"nested deeper than {max_nesting} levels")
    return value


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ParseError(f"an object repeats the key {shown(repeated[0])}")
    return dict(pairs)


def nesting(value, stop_after: int) -> int:
    """Levels of lists/dicts in `value` (0 for a scalar), counting no further than stop_after + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, depth)
            if deepest > stop_after:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_yaml_size(text: str, *, max_nodes: int, max_nesting: int = MAX_NESTING) -> None:
    """Raise ParseError when the YAML `text` nests deeper than `max_nesting` or holds more than
    `max_nodes` nodes with every alias expanded. Reads events only; YAML syntax errors are left to
    the parse that follows (they surface as yaml.YAMLError there)."""
    open_collections: list[tuple[str | None, int]] = []  # (anchor, expanded count when it opened)
    anchored: dict[str, int] = {}  # anchor -> nodes its subtree expands to
    expanded = 0
    try:
        for event in yaml.parse(text, Loader=YAML_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_collections) >= max_nesting:
                    raise ParseError(f"nested deeper than {max_nesting} levels", event.start_mark.line + 1)
                open_collections.append((event.anchor, expanded))
                expanded += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, opened_at = open_collections.pop()
                if anchor is not None:
                    anchored[anchor] = expanded - opened_at
            elif isinstance(event, yaml.ScalarEvent):
                expanded += 1
                if event.anchor is not None:
                    anchored[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                expanded += anchored.get(event.anchor, 1)  # an unknown anchor fails in the parse after
            if expanded > max_nodes:
                raise ParseError(
                    f"holds more than {max_nodes:,} values once its YAML aliases are expanded",
                    event.start_mark.line + 1,
                )
    except yaml.YAMLError as error:
        raise _invalid_yaml(error) from None


def load_yaml(text: str, *, max_nodes: int, max_nesting: int = MAX_NESTING) -> tuple[object, yaml.Node | None]:
    """(data, composed node) of one YAML document, safe types only, at a bounded cost.

    Raises ParseError for a document past the limits or one that is not valid YAML.
    """
    return _load_yaml(text, max_nodes, max_nesting, construct=True)


def compose_yaml(text: str, *, max_nodes: int, max_nesting: int = MAX_NESTING) -> yaml.Node | None:
    """The composed node graph of one YAML (or JSON) document, for its line numbers; as `load_yaml`."""
    return _load_yaml(text, max_nodes, max_nesting, construct=False)[1]


def _load_yaml(text: str, max_nodes: int, max_nesting: int, construct: bool) -> tuple[object, yaml.Node | None]:
    check_yaml_size(text, max_nodes=max_nodes, max_nesting=max_nesting)
    loader = YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        _refuse_repeated_keys(node)
        data = loader.construct_document(node) if construct and node is not None else None
    except yaml.YAMLError as error:
        raise _invalid_yaml(error) from None
    except (ValueError, OverflowError, TypeError) as error:
        # the safe constructor's own failures: a date like 2024-13-45, an integer of 5000 digits
        raise ParseError(f"invalid YAML (a value cannot be read: {type(error).__name__})") from None
    finally:
        loader.dispose()
    return data, node


def _refuse_repeated_keys(node: yaml.Node | None) -> None:
    """A mapping that repeats a key (YAML keeps the last one silently) is refused, with its line."""
    stack, seen = [node], set()
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:  # anchors make the graph share nodes
            continue
        seen.add(id(item))
        if isinstance(item, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in item.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        raise ParseError(f"a mapping repeats the key {shown(key.value)}", key.start_mark.line + 1)
                    keys.add(key.value)
                stack.extend((key, value))
        elif isinstance(item, yaml.SequenceNode):
            stack.extend(item.value)


def _invalid_yaml(error: yaml.YAMLError) -> ParseError:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    return ParseError(f"invalid YAML ({problem})", mark.line + 1 if mark is not None else None)
