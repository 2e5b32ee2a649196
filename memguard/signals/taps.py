"""Where signals are read: a UNet forward hook and wrapping cross-attention processors.

Both are installed per UNet with a reference count: the first guarded call on a UNet installs them,
the last one to finish (or raise) removes them, restoring the processors the pipeline had. They do
nothing by themselves; each call forwards to the `SignalRecorder` active in the *calling thread's*
context (a ContextVar), so two threads driving two pipelines that share one UNet never see each
other's signals.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch
from diffusers.models.attention_processor import Attention

from . import edits as _edits

if TYPE_CHECKING:
    from .recorder import SignalRecorder

_active_recorder: ContextVar[SignalRecorder | None] = ContextVar("memguard_active_recorder", default=None)


def cross_attention_layers(unet: torch.nn.Module) -> dict[str, Attention]:
    """The UNet's cross-attention modules by name (the `attn_processors` key without ".processor")."""
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and getattr(module, "is_cross_attention", False)
    }


class CrossAttentionTap:
    """Wraps a layer's processor: reads attention probabilities when the active recorder wants them,
    then delegates unchanged, so the wrapped (fused, LoRA, IP-Adapter...) path computes the output."""

    def __init__(self, inner, layer_name: str):
        self.inner = inner
        self.layer_name = layer_name
        # diffusers filters cross_attention_kwargs by the processor's __call__ signature: expose the
        # wrapped processor's, so kwargs such as IP-Adapter masks still reach it.
        self.__call__ = functools.wraps(inner.__call__)(functools.partial(type(self).__call__, self))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        recorder = _active_recorder.get()
        if recorder is not None and encoder_hidden_states is not None and recorder.wants_attention(self.layer_name):
            try:
                recorder.on_cross_attention(self.layer_name, attn, hidden_states, encoder_hidden_states, kwargs)
            except Exception as error:  # the guard's failure must not break the user's generation
                recorder.fail(error)
        edit = _edits.current()
        if edit is not None and edit.attention is not None and isinstance(encoder_hidden_states, torch.Tensor):
            cond = recorder.cond_slice if recorder is not None else slice(None)
            return edit.attention(attn, hidden_states, encoder_hidden_states, attention_mask, kwargs.get("temb"), cond)
        return self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )


class UNetTap:
    """The hooks of one UNet, shared by every guarded call running on it."""

    _lock = threading.Lock()
    _taps: dict[int, UNetTap] = {}

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.users = 0
        self._handles: list = []
        self._originals: dict[str, object] = {}

    def _install(self) -> None:
        self._handles = [
            self.unet.register_forward_pre_hook(_pre_hook, with_kwargs=True),
            self.unet.register_forward_hook(_post_hook, with_kwargs=True),
        ]
        for name, module in cross_attention_layers(self.unet).items():
            self._originals[name] = module.processor
            module.set_processor(CrossAttentionTap(module.processor, name))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        layers = cross_attention_layers(self.unet)
        for name, original in self._originals.items():
            module = layers.get(name)
            # Leave a processor the user set meanwhile; only undo our own wrapper.
            if module is not None and isinstance(module.processor, CrossAttentionTap):
                module.set_processor(original)
        self._originals = {}

    @classmethod
    @contextmanager
    def recording(cls, unet: torch.nn.Module, recorder: SignalRecorder):
        """Install the taps on `unet` (if not already) and route them to `recorder` in this context."""
        with cls._lock:
            tap = cls._taps.get(id(unet))
            if tap is None:
                tap = cls._taps[id(unet)] = UNetTap(unet)
            if tap.users == 0:
                tap._install()
            tap.users += 1
        token = _active_recorder.set(recorder)
        try:
            yield
        finally:
            _active_recorder.reset(token)
            with cls._lock:
                tap.users -= 1
                if tap.users == 0:
                    tap._remove()
                    del cls._taps[id(unet)]


def _pre_hook(module, args, kwargs):
    recorder = _active_recorder.get()
    if recorder is not None and recorder.unet is module:
        try:
            recorder.on_unet_call(args, kwargs)
        except Exception as error:
            recorder.fail(error)
    return None


def _post_hook(module, args, kwargs, output):
    recorder = _active_recorder.get()
    if recorder is not None and recorder.unet is module:
        try:
            recorder.on_unet_output(args, kwargs, output)
        except Exception as error:
            recorder.fail(error)
        edit = _edits.current()
        if edit is not None and edit.guidance is not None and not recorder.in_extra_pass:
            # Runs after the recorder read the output: signals stay those of the model itself.
            return edit.guidance(recorder.current_timestep, output)
    return None


def is_installed(unet: torch.nn.Module) -> bool:
    """Whether guard taps are currently installed on `unet` (for tests and diagnostics)."""
    return id(unet) in UNetTap._taps or any(
        isinstance(m.processor, CrossAttentionTap) for m in cross_attention_layers(unet).values()
    )
