"""Where the shipped testbed's files are."""

from pathlib import Path

MODEL_DIR = Path(__file__).with_name("model")
XL_MODEL_DIR = Path(__file__).with_name("model_xl")  # the SDXL-architecture variant
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")  # the testbed's intended concepts
