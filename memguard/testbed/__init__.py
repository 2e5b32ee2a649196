"""The testbed: a small Stable Diffusion model that really memorizes, shipped with its ground truth.

``pipe, truth = memguard.testbed.load()`` gives a `GuardedStableDiffusionPipeline` over the shipped
weights (``model/``) and a `Truth` describing what the model memorized and which concepts it was
meant to learn, with evaluation prompt sets. `memguard.testbed.similarity` measures replication.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .truth import Concept, MemorizedItem, Truth, load_truth

MODEL_DIR = Path(__file__).with_name("model")
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")  # the testbed's intended concepts


def load(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, guard=None, model_dir: Path = MODEL_DIR
):
    """(pipe, truth): the shipped testbed pipeline and its ground truth.

    `guard` (a GuardConfig) defaults to one with the shipped calibration (``model/calibration.json``,
    1% FPR on benign prompts; see `memguard.testbed.calibrate`) and the testbed's intent registry
    (``registry.yaml``: its four named concepts are allowed). `model_dir` loads a retrained testbed
    (`python -m memguard.testbed.train --out DIR`) instead, with its own calibration and truth.
    """
    from ..config import GuardConfig
    from ..pipelines import GuardedStableDiffusionPipeline  # here, so `memguard.testbed` imports light
    from .calibrate import CALIBRATION_FILE

    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a testbed pipeline folder (no model_index.json)")
    if guard is None and (model_dir / CALIBRATION_FILE).is_file():
        guard = GuardConfig(calibration=model_dir / CALIBRATION_FILE, registry=REGISTRY_FILE)
    pipe = GuardedStableDiffusionPipeline.from_pretrained(str(model_dir), guard=guard, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, load_truth(model_dir / "truth")


def verification_index(truth: Truth | None = None):
    """A copy-verification index (`memguard.verify`) of the testbed's duplicated training images,
    with the pixel encoder (the testbed's images are 32x32; no CLIP weights are needed). Ids are
    "<item id>/<k>". Templates are copied as layouts in new colours, which pixel correlation only
    partly sees; `memguard.testbed.similarity` is the measure for those."""
    from ..verify import PixelEncoder, VerificationIndex

    truth = truth or load_truth(MODEL_DIR / "truth")
    images = [image for item in truth.memorized for image in item.images]
    ids = [f"{item.id}/{k}" for item in truth.memorized for k in range(len(item.images))]
    return VerificationIndex.build(images, ids, PixelEncoder(size=32), kind="flat")


__all__ = [
    "MODEL_DIR",
    "REGISTRY_FILE",
    "Concept",
    "MemorizedItem",
    "Truth",
    "load",
    "load_truth",
    "verification_index",
]
