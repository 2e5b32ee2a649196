"""Copy verification: check generations post hoc against an index of protected or training images.

    from memguard.verify import VerificationIndex, PixelEncoder
    index = VerificationIndex.build(paths, ids=paths, encoder=PixelEncoder(), kind="flat")
    index.save("protected.faiss")                      # + protected.faiss.json sidecar
    VerificationIndex.load("protected.faiss").check(images, threshold=0.95)
    threshold = calibrate_copy_threshold(index, benign_generations, target_fpr=0.01)
    GuardConfig(verification=CopyVerification(index, threshold))        # as the guard's last step

See `index.py` for the index kinds and `encoders.py` for the encoders.
"""

from .encoders import ImageEncoder, OpenClipEncoder, PixelEncoder, encoder_from_name
from .index import INDEX_KINDS, CopyCheck, IndexFileError, IndexParams, Match, VerificationIndex
from .step import CopyVerification, calibrate_copy_threshold

__all__ = [
    "INDEX_KINDS",
    "CopyCheck",
    "CopyVerification",
    "ImageEncoder",
    "IndexFileError",
    "IndexParams",
    "Match",
    "OpenClipEncoder",
    "PixelEncoder",
    "VerificationIndex",
    "calibrate_copy_threshold",
    "encoder_from_name",
]
