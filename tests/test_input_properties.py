"""Property tests: whatever a GuardConfig, a Policy, a registry, a calibration or a prompt file holds,
memguard either takes it or raises its own error (`MemguardError`) naming the field or the file,
never a raw exception from a library underneath, and never with prompt text in the message.

Examples are derandomized and counted, so a CI run is the same run every time (a few seconds)."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memguard
from memguard import Calibration, GuardConfig, IntentRegistry, Policy
from memguard.detection import DETECTORS
from memguard.errors import MemguardError
from memguard.prompts_file import prompts_digest, read_prompts

# A deadline of one second per example: a small input must never be slow to refuse.
PROPERTY = settings(
    max_examples=150,
    deadline=timedelta(seconds=1),
    derandomize=True,
    database=None,  # derandomized: nothing to replay, and no .hypothesis folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECRET = "Zyxwv"  # stands for prompt text: it must never reach an error message
SHIPPED_CALIBRATION = Path(memguard.__file__).parent / "testbed" / "model" / "calibration.json"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),  # an int past float's range
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3),
    max_leaves=6,
)
# What breaks parsers rather than schemas: nesting past the recursion limit, integers past Python's
# 4300-digit limit, non-finite numbers, lone surrogates.
HOSTILE_JSON = [
    "[" * 3000 + "]" * 3000,
    '{"a": ' * 3000 + "1" + "}" * 3000,
    "1" + "0" * 5000,
    "1e400",
    "NaN",
    "-Infinity",
    '"\\ud800"',
    "[" * 33 + "]" * 33,
]
ALIAS_FAN_OUT = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 7)
)  # 9**7 values in some 300 bytes
HOSTILE_YAML = [
    *HOSTILE_JSON,
    "- " * 3000 + "x",
    "&a [*a]",
    ALIAS_FAN_OUT,
    "!!python/object/apply:os.system ['true']",
    "2024-13-45",
    "!!binary ====",
    "!!float abc",
    "!!int 1" + "0" * 5000,
    "? [a, b]\n: c",
    "<<: *x",
    "<<: [1, 2]",
    "!!set {a, b}",
    "\t- a",
    "%YAML 9.9\n---\na",
    "--- a\n--- b",
]


def refused_by_memguard(error: BaseException) -> MemguardError:
    """`error` must be memguard's own: anything else is a library's exception leaking through."""
    assert isinstance(error, MemguardError), f"{type(error).__name__}: {error}"
    assert isinstance(error, (ValueError, TypeError))
    return error


# --- GuardConfig and Policy ------------------------------------------------------------------
words = st.sampled_from(["allow", "flag", "resample", "block", "attention", "gradient", "fail_open", "fail_closed"])
config_fields = {
    "enabled": junk,
    "policy": junk | st.just(Policy()),
    "registry": junk.filter(lambda v: not isinstance(v, str)) | st.sampled_from(["no/such/registry.yaml", "."]),
    "attribution": junk | words,
    "residual_draws": junk | st.integers(-2, 10),
    "detector": junk.filter(lambda v: not isinstance(v, str))
    | st.sampled_from(sorted(DETECTORS))
    | st.text(max_size=8),
    "decision_step": junk | st.integers(-2, 60),
    "calibration": junk.filter(lambda v: not isinstance(v, str))
    | st.sampled_from(["no/such/calibration.json", ".", str(SHIPPED_CALIBRATION)]),
    "threshold": junk,
    "attention_layers": junk | st.lists(st.text(max_size=12), max_size=3),
    "record_attention": junk,
    "unconditional_pass": junk,
    "record_all_steps": junk,
    "name": junk | st.text(max_size=70),
    "metrics": junk,
    "on_error": junk | words,
    "implicit": junk,
    "mitigation": junk,
    "verification": junk,
}


@PROPERTY
@given(st.fixed_dictionaries({}, optional=config_fields))
def test_guard_config_takes_a_value_or_names_the_field(kwargs):
    try:
        GuardConfig(**kwargs)
    except Exception as error:  # noqa: BLE001 - the property is about which exceptions escape
        message = str(refused_by_memguard(error)).lower()
        named = [name for name in kwargs if name.replace("_", " ") in message or name in message]
        assert named, f"no field named in: {message}"


@PROPERTY
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "intended": junk | words,
            "unintended": junk | words,
            "mixed": junk | words,
            "max_attempts": junk | st.integers(-2, 5),
            "fallback": junk | words,
        },
    )
)
def test_policy_takes_a_value_or_names_the_field(kwargs):
    try:
        Policy(**kwargs)
    except Exception as error:  # noqa: BLE001
        message = str(refused_by_memguard(error))
        assert any(f"Policy.{name}" in message for name in kwargs), message


# --- registry files --------------------------------------------------------------------------
concept = st.fixed_dictionaries(
    {"name": st.text(max_size=30) | junk},
    optional={
        "aliases": st.lists(st.text(max_size=20), max_size=3) | junk,
        "description": st.text(max_size=40) | junk,
        "policy": st.sampled_from(["allow", "unintended"]) | junk,
        "colour": junk,
        1: junk,
        None: junk,
    },
)
registry_data = st.fixed_dictionaries(
    {"concepts": st.lists(concept, max_size=4) | junk},
    optional={"version": st.just(1) | junk, 7: junk, "extra": junk, True: junk},
)
YAML_CHARACTERS = "abc 01-:[]{},&*!|>'\"#?%@`\n\t."


def _dump(data, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)  # keys of mixed types do not sort
    return json.dumps({str(k): v for k, v in data.items()})


def registry_texts():
    formats = st.sampled_from(["yaml", "json"])
    structured = st.tuples(registry_data, formats).map(lambda pair: (_dump(*pair), pair[1]))
    raw = st.tuples(st.text(alphabet=YAML_CHARACTERS, max_size=120), formats)
    hostile = st.tuples(
        st.sampled_from(["concepts: ", "concepts:\n  - name: ", "", "version: "]), st.sampled_from(HOSTILE_YAML)
    )
    return structured | raw | st.tuples(hostile.map("".join), formats)


@PROPERTY
@given(registry_texts())
def test_a_registry_file_loads_or_names_the_file_and_field(text_and_format):
    text, fmt = text_and_format
    try:
        registry = IntentRegistry.from_text(text, source="reg.txt", fmt=fmt)
    except Exception as error:  # noqa: BLE001
        assert str(refused_by_memguard(error)).startswith("intent registry reg.txt")
    else:
        assert all(isinstance(c.name, str) and c.name.strip() for c in registry)


# --- calibration files ------------------------------------------------------------------------
CALIBRATION_FIELDS = sorted(json.loads(SHIPPED_CALIBRATION.read_text()))
calibration_changes = st.dictionaries(
    st.sampled_from(CALIBRATION_FIELDS + ["extra"]),
    junk | st.integers(0, 60) | st.floats(-2, 2) | st.dictionaries(st.text(max_size=8), junk, max_size=2),
    max_size=3,
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


@PROPERTY
@given(changes=calibration_changes, dropped=st.sets(st.sampled_from(CALIBRATION_FIELDS), max_size=2))
def test_a_calibration_file_loads_or_names_the_file_and_field(scratch, changes, dropped):
    data = {k: v for k, v in {**json.loads(SHIPPED_CALIBRATION.read_text()), **changes}.items() if k not in dropped}
    path = scratch / "calibration.json"
    path.write_text(json.dumps(data))
    try:
        Calibration.load(path)
    except Exception as error:  # noqa: BLE001
        message = str(refused_by_memguard(error))
        assert f"calibration file {path}" in message
        assert any(name in message for name in CALIBRATION_FIELDS + ["field(s)"]), message


SHIPPED_TEXT = SHIPPED_CALIBRATION.read_text()
hostile_calibrations = st.tuples(st.sampled_from(CALIBRATION_FIELDS), st.sampled_from(HOSTILE_JSON)).map(
    lambda pair: SHIPPED_TEXT.replace(f'"{pair[0]}": ', f'"{pair[0]}": {pair[1]}, "_": ', 1)
)


@PROPERTY
@given(
    st.binary(max_size=200)
    | st.text(alphabet='{}[]":,0123456789.eE-+ntrufalsNI \n', max_size=200)
    | st.sampled_from(HOSTILE_JSON)
    | hostile_calibrations
)
def test_any_calibration_bytes_load_or_name_the_file(scratch, content):
    path = scratch / "raw_calibration.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        Calibration.load(path)
    except Exception as error:  # noqa: BLE001
        assert str(path) in str(refused_by_memguard(error))


# --- prompt files -----------------------------------------------------------------------------
def _record(value) -> str:
    return json.dumps({"caption": value, "note": SECRET})


prompt_lines = st.lists(
    st.one_of(
        st.text(max_size=30).map(lambda t: f"{SECRET} {t}"),  # a plain prompt
        st.text(max_size=20).map(lambda t: _record(f"{SECRET} {t}")),  # a JSONL record
        junk.map(_record),  # a record whose caption is anything
        st.text(alphabet='{}[]":,0123456789 ', max_size=30).map(lambda t: "{" + f'"{SECRET}": ' + t),  # broken JSON
        st.binary(max_size=20).map(lambda b: SECRET + b.decode("latin-1")),
        st.sampled_from(HOSTILE_JSON).map(lambda h: '{"caption": ' + h + f', "{SECRET}": 1}}'),
        st.sampled_from(HOSTILE_JSON).map(lambda h: f'{{"caption": "{SECRET}", "other": ' + h + "}"),
    ),
    max_size=5,
)


@PROPERTY
@given(lines=prompt_lines, suffix=st.sampled_from([".txt", ".jsonl"]), raw=st.just(b"") | st.binary(max_size=40))
def test_a_prompt_file_loads_or_names_the_file_and_line_but_never_its_text(scratch, lines, suffix, raw):
    path = scratch / f"prompts{suffix}"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw)
    try:
        prompts = read_prompts(path)
    except Exception as error:  # noqa: BLE001
        message = str(refused_by_memguard(error))
        assert str(path) in message and SECRET not in message
    else:
        assert [p.index for p in prompts] == list(range(len(prompts)))
        assert all(isinstance(p.text, str) and p.text.strip() for p in prompts)
        prompts_digest(prompts)  # what a scan does first with them
