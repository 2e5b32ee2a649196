import json

from PIL import Image
from typer.testing import CliRunner

from memguard.cli import app


def test_demo_writes_a_grid_and_a_report_per_image(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert [image["kind"] for image in report["images"]] == ["memorized", "intended", "mixed", "novel"]
    assert all(image["report"]["status"] == "checked" for image in report["images"])
    assert report["model"] in result.output
    grid = Image.open(tmp_path / "demo_grid.png")
    assert grid.width == 4 * 160 and grid.height > 160


def test_cli_without_a_command_shows_help():
    result = CliRunner().invoke(app, [])
    assert "demo" in result.output
