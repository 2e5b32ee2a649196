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


def eager_module(unet: torch.nn.Module) -> torch.nn.Module:
    """The module itself, or the original module behind `torch.compile(unet)`: the guard's own UNet
    evaluations and attention reads run it eagerly, so nothing of the guard enters a compiled graph."""
    return getattr(unet, "_orig_mod", unet) if is_compiled(unet) else unet


def is_compiled(unet: torch.nn.Module) -> bool:
    """Whether `unet` is `torch.compile(module)` (its hooks run outside the compiled graph)."""
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(unet, OptimizedModule)


def check_compilable(unet: torch.nn.Module) -> None:
    """An in-place compiled module (`unet.compile()`) traces its own hooks into the graph, where the
    guard's would break it into pieces and recompile on every call: refuse it, naming the way that works."""
    if getattr(unet, "_compiled_call_impl", None) is not None:
        raise TypeError(
            "the pipeline's UNet was compiled in place (unet.compile()), which compiles its hooks too; memguard "
            "reads its signals around the UNet call: compile it as `pipe.unet = torch.compile(pipe.unet)` instead"
        )


def cross_attention_layers(unet: torch.nn.Module) -> dict[str, Attention]:
    """The UNet's cross-attention modules by name (the `attn_processors` key without ".processor"); for
    a compiled UNet, those of the module it compiles (the same names)."""
    return {
        name: module
        for name, module in eager_module(unet).named_modules()
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
        if edit is not None and edit.attention is not None and encoder_hidden_states is not None:
            cond = recorder.cond_slice if recorder is not None else slice(None)
            if isinstance(encoder_hidden_states, torch.Tensor):
                return edit.attention(
                    attn, hidden_states, encoder_hidden_states, attention_mask, kwargs.get("temb"), cond
                )
            if isinstance(encoder_hidden_states, tuple):  # IP-Adapter: (text, image) embeddings
                output = self.inner(
                    attn,
                    hidden_states,
                    encoder_hidden_states=encoder_hidden_states,
                    attention_mask=attention_mask,
                    **kwargs,
                )
                text = encoder_hidden_states[0]
                change = edit.attention.change(attn, hidden_states, text, attention_mask, kwargs.get("temb"), cond)
                return output + change.to(output.dtype)
        return self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )


class UNetTap:
    """The hooks of one UNet, shared by every guarded call running on it.

    On a compiled UNet (`torch.compile(unet)`) only the forward hooks are installed, on the compiled
    wrapper, outside the graph; its attention processors are left alone (a new processor would make it
    recompile) and the recorder reads attention by running the original module eagerly."""

    _lock = threading.Lock()
    _taps: dict[int, UNetTap] = {}

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.users = 0
        self._handles: list = []
        self._originals: dict[str, object] = {}

    def _install(self) -> None:
        check_compilable(self.unet)
        self._handles = [
            self.unet.register_forward_pre_hook(_pre_hook, with_kwargs=True),
            self.unet.register_forward_hook(_post_hook, with_kwargs=True),
        ]
        if not is_compiled(self.unet):
            self._originals = install_attention_taps(self.unet)

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        remove_attention_taps(self.unet, self._originals)
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


def install_attention_taps(unet: torch.nn.Module) -> dict[str, object]:
    """Wrap every cross-attention processor of `unet` in a `CrossAttentionTap`; returns the originals."""
    originals = {}
    for name, module in cross_attention_layers(unet).items():
        originals[name] = module.processor
        module.set_processor(CrossAttentionTap(module.processor, name))
    return originals


def remove_attention_taps(unet: torch.nn.Module, originals: dict[str, object]) -> None:
    layers = cross_attention_layers(unet)
    for name, original in originals.items():
        module = layers.get(name)
        # Leave a processor the user set meanwhile; only undo our own wrapper.
        if module is not None and isinstance(module.processor, CrossAttentionTap):
            module.set_processor(original)


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
            sample = args[0] if args else kwargs.get("sample")
            return edit.guidance(recorder.current_timestep, output, sample)
    return None


def is_installed(unet: torch.nn.Module) -> bool:
    """Whether guard taps are currently installed on `unet` (for tests and diagnostics)."""
    return id(unet) in UNetTap._taps or any(
        isinstance(m.processor, CrossAttentionTap) for m in cross_attention_layers(unet).values()
    )
