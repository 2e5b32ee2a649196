"""Signals read from the denoising loop through public diffusers seams (see `taps`)."""

from .needs import SignalNeeds
from .recorder import NO_UNCONDITIONAL_BRANCH, SignalRecorder
from .taps import CrossAttentionTap, UNetTap, cross_attention_layers, is_installed
from .trace import SignalTrace, StepSignals

__all__ = [
    "NO_UNCONDITIONAL_BRANCH",
    "CrossAttentionTap",
    "SignalNeeds",
    "SignalRecorder",
    "SignalTrace",
    "StepSignals",
    "UNetTap",
    "cross_attention_layers",
    "is_installed",
]
