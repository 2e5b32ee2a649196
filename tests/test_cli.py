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
    picture = Image.open(tmp_path / "demo_grid.png")
    assert picture.height > 4 * 128 and picture.width > 3 * 128  # a strip per prompt, 128-pixel tiles
    # the memorized caption was re-sampled: the guarded tile differs from the unguarded one
    assert report["images"][0]["report"]["action"] == "resampled"
    assert report["images"][3]["report"]["action"] == "none"


def test_plain_verdicts_say_what_was_found_and_done():
    from memguard.grid import plain_verdict
    from memguard.report import Attempt, MemorizationReport

    def report(memorized, intent, action, attempts=1):
        first = Attempt(0.99 if memorized else 0.5, memorized, intent)
        return MemorizationReport(
            score=0.5,
            threshold=0.9,
            memorized=False,
            decided_at_step=1,
            action=action,
            intent=intent,
            attempts=[first] + [Attempt(0.5, False, "none", "m")] * (attempts - 1),
        )

    assert plain_verdict(report(False, "none", "none")) == "A new image: nothing memorized. Left untouched."
    copied = plain_verdict(report(True, "unintended", "resampled", attempts=2))
    assert copied.startswith("Copies a memorized training image") and "1 re-sample" in copied
    assert plain_verdict(report(True, "intended", "allowed")).endswith("as asked. Allowed.")
    assert "memorized training photo" in plain_verdict(report(True, "mixed", "blocked"))
    assert plain_verdict(report(True, "unintended", "blocked")).endswith("Blocked (a black image).")


def test_cli_without_a_command_shows_help():
    result = CliRunner().invoke(app, [])
    assert "demo" in result.output
