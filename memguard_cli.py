"""The `memguard` command's entry point: it sets OMP_WAIT_POLICY=PASSIVE (unless already set) before
torch loads, then runs memguard's CLI (`memguard/cli.py`).

Why a module outside the package: OpenMP reads the variable once, when torch loads it, and importing
anything inside `memguard` imports torch first. Spinning OpenMP threads slow a CPU run 10-20x whenever
anything else runs on the machine; passive threads cost nothing measurable. Importing `memguard` as a
library never changes the environment.
"""

import os


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from memguard.cli import app

    app()


if __name__ == "__main__":
    main()
