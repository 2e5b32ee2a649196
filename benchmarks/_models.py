"""Which model a benchmark runs on: the shipped testbed by default, a tiny random SD pipeline, or any
diffusers model id / local path. The mapping lives in the package (`memguard.models`), shared with the CLI."""

from memguard.models import load_pipeline

__all__ = ["load_pipeline"]
