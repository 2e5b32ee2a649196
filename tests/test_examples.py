"""Every example runs (on the shipped testbed)."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_wrap_existing_pipeline_prints_a_report():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "wrap_existing_pipeline.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "checked" and report["action"] in ("none", "flagged")
