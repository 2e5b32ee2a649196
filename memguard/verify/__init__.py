"""Copy verification: check generations post hoc against an index of protected or training images.

    from memguard.verify import VerificationIndex
    index = VerificationIndex.build(paths, ids=paths, encoder="dinov2:facebook/dinov2-small", kind="flat")
    index.save("protected.faiss")                      # + protected.faiss.json sidecar
    VerificationIndex.load("protected.faiss").check(images, threshold=0.9)
    threshold = calibrate_copy_threshold(index, benign_generations, target_fpr=0.01)
    GuardConfig(verification=CopyVerification(index, threshold))        # as the guard's last step

See `index.py` for the index kinds, `specs.py` for the encoder specs, docs/verification.md for how
to choose an encoder and a threshold.
"""

from .encoders import EncoderError, ImageEncoder, PixelEncoder
from .index import INDEX_KINDS, CopyCheck, IndexFileError, IndexParams, Match, VerificationIndex
from .open_clip_encoder import OpenClipEncoder
from .specs import SPEC_FORMS, encoder_from_name
from .step import CopyVerification, calibrate_copy_threshold
from .torchscript_encoder import TorchScriptEncoder
from .transformers_encoders import ClipVisionEncoder, DinoV2Encoder

__all__ = [
    "INDEX_KINDS",
    "SPEC_FORMS",
    "ClipVisionEncoder",
    "CopyCheck",
    "CopyVerification",
    "DinoV2Encoder",
    "EncoderError",
    "ImageEncoder",
    "IndexFileError",
    "IndexParams",
    "Match",
    "OpenClipEncoder",
    "PixelEncoder",
    "TorchScriptEncoder",
    "VerificationIndex",
    "calibrate_copy_threshold",
    "encoder_from_name",
]
