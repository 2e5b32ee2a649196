"""Signals read from the denoising loop through public diffusers seams (see `taps`)."""

from .edits import Edits, editing
from .needs import SignalNeeds
from .recorder import NO_UNCONDITIONAL_BRANCH, SignalRecorder
from .replay import ImageInputs, UNetCall
from .taps import CrossAttentionTap, UNetTap, cross_attention_layers, is_installed
from .trace import SignalTrace, StepSignals

__all__ = [
    "NO_UNCONDITIONAL_BRANCH",
    "CrossAttentionTap",
    "Edits",
    "ImageInputs",
    "SignalNeeds",
    "SignalRecorder",
    "SignalTrace",
    "StepSignals",
    "UNetCall",
    "UNetTap",
    "cross_attention_layers",
    "editing",
    "is_installed",
]
