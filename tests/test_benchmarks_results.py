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


def test_a_figure_follows_its_json_so_a_second_model_s_run_keeps_the_docs_figure(tmp_path):
    results_dir, assets = tmp_path / "results", tmp_path / "assets"
    default_out, default_plot = results_dir / "detection.json", assets / "detection_roc.png"
    with loaded_script(ROOT / "benchmarks" / "_results.py", "benchmark_results") as results:
        beside = results.plot_beside
        assert beside(default_out, default_out, default_plot) == default_plot
        # the same file named another way is still the default run
        assert beside(results_dir / ".." / "results" / "detection.json", default_out, default_plot) == default_plot
        second = beside(results_dir / "detection_xl.json", default_out, default_plot)
        assert second == results_dir / "detection_roc_xl.png"
        # a scratch folder gets its own figure, even under the default file name
        assert beside(tmp_path / "scratch" / "detection.json", default_out, default_plot) == (
            tmp_path / "scratch" / "detection_roc.png"
        )
        assert beside(tmp_path / "run7.json", default_out, default_plot) == tmp_path / "detection_roc_run7.png"
