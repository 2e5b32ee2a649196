"""What `pip install .` installs: the guard, its benign corpus and its licence, without the testbeds'
weights (the demo, the tests and the benchmarks run from a clone)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_wheel_carries_the_guard_without_the_testbed_weights(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("memguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "memguard/pipelines/guarded_call.py" in names and "memguard_cli.py" in names
    assert "memguard/data/benign_prompts.txt" in names
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert not [n for n in names if n.endswith((".safetensors", ".png")) or "/model/" in n or "/model_xl/" in n]
    assert wheel.stat().st_size < 2_000_000  # the weights alone are tens of MB
