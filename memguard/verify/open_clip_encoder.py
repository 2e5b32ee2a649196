"""`OpenClipEncoder`: an open_clip image tower (`open_clip:<model>/<pretrained>`).

open_clip needs torchvision for its transforms. Where a torchvision build fits the installed torch,
`pip install 'memguard[clip]' torchvision`; elsewhere (a CPU-only torch without a matching
torchvision) use `ClipVisionEncoder` (`clip:`) or `DinoV2Encoder` (`dinov2:`), which need neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .encoders import EncoderError, ImageLike, as_pil, one_line, weights_fingerprint
from .torch_encoding import checked_batch_size, checked_device, encode_batches

OPEN_CLIP_PREFIX = "open_clip:"
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"


class OpenClipEncoder:
    """An open_clip image tower; `model`/`pretrained` as in `open_clip.create_model_and_transforms`."""

    def __init__(
        self,
        model: str = DEFAULT_CLIP_MODEL,
        pretrained: str = DEFAULT_CLIP_PRETRAINED,
        device: str = "cpu",
        batch_size: int = 64,
    ):
        self.device = checked_device(device, "OpenClipEncoder")
        self.batch_size = checked_batch_size(batch_size, "OpenClipEncoder")
        self.name = f"{OPEN_CLIP_PREFIX}{model}/{pretrained}"
        try:
            import open_clip
        except Exception as err:  # a missing torchvision, or one built for another torch, fails here
            raise EncoderError(
                f"encoder {self.name!r} needs open_clip_torch and a torchvision that fits the installed torch "
                f"({one_line(err)}); install them with `pip install 'memguard[clip]' torchvision`, or use "
                "clip:<folder or hub id> or dinov2:<folder or hub id>, which need neither"
            ) from None
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
        except Exception as err:  # an unknown model or tag, or weights that cannot be downloaded
            raise EncoderError(f"encoder {self.name!r}: open_clip cannot create it ({one_line(err)})") from None
        self.model = self.model.eval().to(self.device)
        self.dim = int(self.model.visual.output_dim)
        self.fingerprint = weights_fingerprint(self.model.visual.state_dict(), "open_clip", model, pretrained)

    def encode(self, images: Sequence[ImageLike]) -> np.ndarray:
        return encode_batches(images, self.dim, self.batch_size, self._embed_images)

    def _embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        import torch

        batch = torch.stack([self.preprocess(as_pil(image)) for image in images]).to(self.device)
        return self.model.encode_image(batch).float().cpu().numpy()
