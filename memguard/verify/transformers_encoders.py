"""Image encoders on transformers models: DINOv2 and CLIP's vision tower.

Each loads, with `from_pretrained`, a Hugging Face hub id (downloaded once into the hub cache) or a
local folder holding the model (`config.json` and weights) and its image processor
(`preprocessor_config.json`), and preprocesses like that processor: resize, centre crop, rescale and
normalize with the values in its config. Preprocessing runs on PIL (transformers' PIL backend), so
neither torchvision nor open_clip is needed, and the same images give the same embeddings wherever the
index is built or checked.

- `DinoV2Encoder` (`dinov2:<folder or hub id>`): self-supervised features that keep layout and
  texture, the usual choice for near-duplicate and copy retrieval. Row: the CLS token after the final
  layer norm (`pool="cls"`), or the mean of the patch tokens (`pool="mean"`, `dinov2:...?pool=mean`).
  Checkpoints with registers (`Dinov2WithRegistersModel`) load too.
- `ClipVisionEncoder` (`clip:<folder or hub id>`): CLIP image embeddings (`image_embeds`, after the
  visual projection), from a full CLIP checkpoint or a `CLIPVisionModelWithProjection` one. Semantic:
  two images of the same subject score high even when neither copies the other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .encoders import EncoderError, ImageLike, as_pil, one_line, weights_fingerprint
from .torch_encoding import checked_batch_size, checked_device, encode_batches

DINOV2_PREFIX = "dinov2:"
CLIP_PREFIX = "clip:"
DINOV2_POOLS = ("cls", "mean")
# "org/name" or "name": what may be a hub id rather than a path (a path that does not exist is reported as such)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
# processor config keys that name a class rather than change the pixels
_PROCESSOR_TYPE_KEYS = ("image_processor_type", "feature_extractor_type", "processor_class")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading (a full CLIP checkpoint's
    text weights are expected to go unused), then restore the caller's settings."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _pil_processor_class(name: str):
    """transformers >= 5 names the PIL backend `<name>Pil` (the plain name needs torchvision there);
    in 4.x the plain name is the PIL/numpy processor."""
    import transformers

    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


class _TransformersEncoder:
    """Loading, checking and batching shared by the transformers encoders; subclasses set the family
    and embed a batch of pixel values."""

    family: str  # "dinov2" or "clip": the spec prefix, and how errors name the encoder
    title: str  # how errors name the expected model
    model_types: dict[str, str]  # config.model_type -> transformers model class
    processor_class: str

    def __init__(self, source: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32):
        owner = type(self).__name__
        self.device = checked_device(device, owner)
        self.batch_size = checked_batch_size(batch_size, owner)
        self.source = self._resolve(source)
        with _quiet_transformers():
            config = self._load_config()
            self.processor = self._load_processor()
            self.model = self._load_model(config).eval().to(self.device)
        self.config = config

    # --- loading ---------------------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return f"{self.family} encoder source"

    def _resolve(self, source) -> str:
        if not isinstance(source, (str, os.PathLike)) or not os.fspath(source).strip():
            raise EncoderError(f"{self._label} must be a model folder or a Hugging Face hub id, got {source!r}")
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise EncoderError(
                    f"{self._label} {text!r}: the folder has no config.json (a model saved there with save_pretrained)"
                )
            return str(path.resolve())  # the sidecar names it: an index must load from any working directory
        if path.exists():
            raise EncoderError(f"{self._label} {text!r} is a file; pass the folder that holds the model")
        if not _HUB_ID.fullmatch(text) or ".." in text:
            raise EncoderError(f"{self._label} {text!r}: no such folder")
        return text  # a hub id (or a relative folder that is not there: the error below says both)

    def _from_hub_or_folder(self, load, what: str):
        try:
            return load()
        except EncoderError:
            raise
        except Exception as err:  # transformers and huggingface_hub raise many kinds for a bad or absent model
            if Path(self.source).is_dir():
                raise EncoderError(f"{self._label} {self.source!r}: cannot load its {what} ({one_line(err)})") from None
            raise EncoderError(
                f"{self._label} {self.source!r} is neither a local folder nor a model the Hugging Face hub could "
                f"provide ({one_line(err)})"
            ) from None

    def _load_config(self):
        from transformers import AutoConfig

        config = self._from_hub_or_folder(lambda: AutoConfig.from_pretrained(self.source), "config")
        if config.model_type not in self.model_types:
            raise EncoderError(
                f"{self._label} {self.source!r} holds a {config.model_type!r} model, not {self.title} "
                f"(model_type {' or '.join(repr(t) for t in self.model_types)})"
            )
        return config

    def _load_processor(self):
        if Path(self.source).is_dir() and not (Path(self.source) / "preprocessor_config.json").is_file():
            raise EncoderError(
                f"{self._label} {self.source!r}: no preprocessor_config.json, so the model's preprocessing is unknown "
                "(save its image processor there with save_pretrained)"
            )
        processor_class = _pil_processor_class(self.processor_class)
        return self._from_hub_or_folder(lambda: processor_class.from_pretrained(self.source), "image processor")

    def _load_model(self, config):
        import transformers

        model_class = getattr(transformers, self.model_types[config.model_type])
        model, info = self._from_hub_or_folder(
            lambda: model_class.from_pretrained(self.source, output_loading_info=True), "weights"
        )
        missing = sorted(info.get("missing_keys", ()))
        if missing:  # transformers would fill them with random values: embeddings of nothing
            raise EncoderError(
                f"{self._label} {self.source!r}: the checkpoint lacks {len(missing)} of the weights a {self.title} "
                f"encoder needs (e.g. {missing[0]!r})"
            )
        return model

    # --- identity and encoding -------------------------------------------------------------------

    def _settings(self) -> dict:
        return {k: v for k, v in self.processor.to_dict().items() if k not in _PROCESSOR_TYPE_KEYS}

    def _finish(self, dim: int, options: dict[str, str]) -> None:
        """Set `dim`, `name` (the spec, non-default options after '?') and `fingerprint`."""
        self.dim = int(dim)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        self.name = f"{self.family}:{self.source}" + (f"?{query}" if query else "")
        self.fingerprint = weights_fingerprint(
            self.model.state_dict(), self.family, sorted(options.items()), sorted(self._settings().items())
        )

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        return encode_batches(images, self.dim, self.batch_size, self._embed_images)

    def _embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        pixels = self.processor(images=[as_pil(image) for image in images], return_tensors="pt")["pixel_values"]
        return self._embed(pixels.to(self.device)).float().cpu().numpy()

    def _embed(self, pixel_values):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim})"


class DinoV2Encoder(_TransformersEncoder):
    """DINOv2 features (`Dinov2Model`), the CLS token or mean-pooled patch tokens, L2-normalized."""

    family = "dinov2"
    title = "DINOv2"
    model_types = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
    processor_class = "BitImageProcessor"  # what facebook/dinov2-* ship (resize 256, crop 224, ImageNet mean/std)

    def __init__(self, source: str | os.PathLike, *, pool: str = "cls", device: str = "cpu", batch_size: int = 32):
        if pool not in DINOV2_POOLS:
            raise EncoderError(f"DinoV2Encoder.pool must be one of {DINOV2_POOLS}, got {pool!r}")
        self.pool = pool
        super().__init__(source, device=device, batch_size=batch_size)
        # patch tokens start after the CLS token and any register tokens
        self._first_patch = 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)
        self._finish(self.config.hidden_size, {"pool": pool} if pool != "cls" else {})

    def _embed(self, pixel_values):
        outputs = self.model(pixel_values=pixel_values)
        if self.pool == "cls":
            return outputs.pooler_output  # the CLS token after the final layer norm
        return outputs.last_hidden_state[:, self._first_patch :].mean(dim=1)


class ClipVisionEncoder(_TransformersEncoder):
    """CLIP image embeddings (`CLIPVisionModelWithProjection.image_embeds`), L2-normalized."""

    family = "clip"
    title = "CLIP"
    model_types = {"clip": "CLIPVisionModelWithProjection", "clip_vision_model": "CLIPVisionModelWithProjection"}
    processor_class = "CLIPImageProcessor"

    def __init__(self, source: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32):
        super().__init__(source, device=device, batch_size=batch_size)
        self._finish(self.model.config.projection_dim, {})

    def _embed(self, pixel_values):
        return self.model(pixel_values=pixel_values).image_embeds
