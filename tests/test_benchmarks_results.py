"""The benchmarks' shared JSON writer: strict JSON, a rate over no images written as null, an infinity
as a string float() reads."""

import json
import math

from helpers import ROOT, loaded_script


def _refuse(name):
    raise ValueError(f"not strict JSON: {name}")


def test_nan_is_written_as_null_and_the_file_is_strict_json(tmp_path):
    out = tmp_path / "nested" / "result.json"
    result = {"rate": float("nan"), "rows": [{"follows": math.nan, "copies": 0.25}, (1.0, math.nan)], "cut": -math.inf}
    with loaded_script(ROOT / "benchmarks" / "_results.py", "benchmark_results") as results:
        results.write_json(result, out, echo=False)
    parsed = json.loads(out.read_text(), parse_constant=_refuse)
    assert parsed == {"rate": None, "rows": [{"follows": None, "copies": 0.25}, [1.0, None]], "cut": "-inf"}
    assert float(parsed["cut"]) == -math.inf
