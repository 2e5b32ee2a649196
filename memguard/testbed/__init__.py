"""The testbed: a small Stable Diffusion model that really memorizes, shipped with its ground truth.

``pipe, truth = memguard.testbed.load()`` gives a `GuardedStableDiffusionPipeline` over the shipped
weights (``model/``) and a `Truth` describing what the model memorized and which concepts it was
meant to learn, with evaluation prompt sets. ``memguard.testbed.load(model_dir=XL_MODEL_DIR)`` (or
``load_xl()``) gives the SDXL-architecture variant trained on the same data (``model_xl/``) as a
`GuardedStableDiffusionXLPipeline`. `memguard.testbed.similarity` measures replication.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .paths import MODEL_DIR, REGISTRY_FILE, XL_MODEL_DIR
from .truth import Concept, MemorizedItem, Truth, load_truth

SHIPPED = {"testbed": MODEL_DIR, "testbed-xl": XL_MODEL_DIR}  # the names the CLI and benchmarks take


def folder(model: str | Path) -> Path:
    """A testbed's folder: "testbed" / "testbed-xl" (the shipped SD and SDXL testbeds) or a folder path."""
    return SHIPPED.get(str(model), Path(model))


def load(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, guard=None, model_dir: Path = MODEL_DIR
):
    """(pipe, truth): a testbed pipeline, guarded, and its ground truth.

    `model_dir`: the shipped SD testbed (`MODEL_DIR`), its SDXL variant (`XL_MODEL_DIR`), or a retrained
    one (`python -m memguard.testbed.train [--family sdxl] --out DIR`); its `model_index.json` names the
    pipeline class, whose guarded class is loaded. `guard` (a GuardConfig) defaults to one with the
    folder's calibration (``calibration.json``, 1% FPR on benign prompts; see
    `memguard.testbed.calibrate`) and the testbed's intent registry (``registry.yaml``: its four named
    concepts are allowed).
    """
    import json

    import diffusers

    from ..config import GuardConfig
    from ..pipelines import guarded_class_for  # here, so `memguard.testbed` imports light
    from .calibrate import CALIBRATION_FILE

    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        if model_dir in SHIPPED.values():
            raise FileNotFoundError(
                f"the testbed's weights ({model_dir.name}/) are not installed: they ship with the repository "
                "checkout, not the package; clone it and run `bash scripts/setup.sh` (an editable install)"
            )
        raise FileNotFoundError(f"{model_dir} is not a testbed pipeline folder (no model_index.json)")
    if guard is None and (model_dir / CALIBRATION_FILE).is_file():
        guard = GuardConfig(calibration=model_dir / CALIBRATION_FILE, registry=REGISTRY_FILE)
    class_name = json.loads((model_dir / "model_index.json").read_text())["_class_name"]
    cls = guarded_class_for(getattr(diffusers, class_name))
    pipe = cls.from_pretrained(str(model_dir), guard=guard, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, load_truth(model_dir / "truth")


def load_xl(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, guard=None):
    """(pipe, truth) of the shipped SDXL-architecture testbed (`XL_MODEL_DIR`)."""
    return load(device, dtype, guard, model_dir=XL_MODEL_DIR)


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
    "SHIPPED",
    "XL_MODEL_DIR",
    "REGISTRY_FILE",
    "Concept",
    "MemorizedItem",
    "Truth",
    "folder",
    "load",
    "load_truth",
    "load_xl",
    "verification_index",
]
