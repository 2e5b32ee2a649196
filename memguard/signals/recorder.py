"""`SignalRecorder`: turns the taps' raw callbacks into a `SignalTrace` for one pipeline call."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from ..cross_attention import project
from .trace import SignalTrace

# Why the noise signal may be missing for a call; shown in reports.
NO_UNCONDITIONAL_BRANCH = (
    "guidance is off (guidance_scale <= 1), so there is no unconditional branch to compare with; "
    "set GuardConfig(unconditional_pass=True) to pay one extra UNet pass per step up to the decision step"
)


def _unet_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, object, dict]:
    """(sample, timestep, the other keyword arguments) of a UNet2DConditionModel call."""
    rest = dict(kwargs)
    sample = args[0] if len(args) > 0 else rest.pop("sample")
    timestep = args[1] if len(args) > 1 else rest.pop("timestep")
    if len(args) > 2:
        rest["encoder_hidden_states"] = args[2]
    return sample, timestep, rest


def _as_float(timestep) -> float:
    return float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep)


class SignalRecorder:
    """Collects the signals of one guarded call.

    `step` is the 0-based index of the denoising step whose UNet call comes next; the guard's step
    callback advances it, so it matches the pipeline's own loop index for every scheduler.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        *,
        guidance_enabled: Callable[[], bool],
        record_until_step: int | None,
        attention_layers: frozenset[str] | None,
        unconditional_embeds: Callable[[int], torch.Tensor] | None = None,
    ):
        self.unet = unet
        self.trace = SignalTrace()
        self.step = 0
        self.num_images: int | None = None
        self.seconds = 0.0
        self.noise_unavailable_reason: str | None = None
        self._guidance_enabled = guidance_enabled
        self._record_until = record_until_step  # record steps < this; None: every step
        self._attention_layers = attention_layers  # None: attention is not recorded
        self._unconditional_embeds = unconditional_embeds
        self.cond_slice = slice(None)  # the text-conditioned rows of the current UNet batch
        self.in_extra_pass = False  # a UNet call of the guard's own (ignored by the taps)
        self.current_timestep: float = 0.0
        self.first_sample: torch.Tensor | None = None  # (N, C, h, w) UNet input of the first step
        self.first_cond_states: torch.Tensor | None = None  # (N, T, D) text states of the first step
        self.first_uncond_states: torch.Tensor | None = None  # (N, T, D) or None without CFG
        self._cfg_now = False

    # --- what to record -------------------------------------------------------------------------
    def recording_now(self) -> bool:
        return not self.in_extra_pass and (self._record_until is None or self.step < self._record_until)

    def wants_attention(self, layer_name: str) -> bool:
        return self._attention_layers is not None and layer_name in self._attention_layers and self.recording_now()

    # --- taps -----------------------------------------------------------------------------------
    def on_unet_call(self, args: tuple, kwargs: dict) -> None:
        if self.in_extra_pass:
            return
        start = time.perf_counter()
        sample, timestep, rest = _unet_inputs(args, kwargs)
        batch = sample.shape[0]
        # The CFG batch is [uncond, cond]; a user's callback may turn guidance off mid-run.
        cfg = self._guidance_enabled() and batch % 2 == 0
        images = batch // 2 if cfg else batch
        self.num_images = self.num_images or images
        self.cond_slice = slice(images, None) if cfg else slice(None)
        self._cfg_now = cfg
        self.current_timestep = _as_float(timestep)
        if self.step == 0 and self.first_sample is None:
            self.first_sample = sample[self.cond_slice].detach()
            states = rest.get("encoder_hidden_states")
            if isinstance(states, torch.Tensor):
                self.first_cond_states = states[self.cond_slice].detach()
                self.first_uncond_states = states[:images].detach() if cfg else None
        if self.recording_now():
            self.trace.at(self.step).timestep = self.current_timestep
        self.seconds += time.perf_counter() - start

    def on_unet_output(self, args: tuple, kwargs: dict, output) -> None:
        if not self.recording_now():
            return
        start = time.perf_counter()
        eps = output[0] if isinstance(output, (tuple, list)) else output.sample
        if self._cfg_now:
            eps_uncond, eps_text = eps.chunk(2)
            self.trace.record_noise(self.step, eps_text, eps_uncond)
        elif self._unconditional_embeds is not None:
            self.trace.record_noise(self.step, eps, self._extra_unconditional_pass(args, kwargs))
        else:
            self.noise_unavailable_reason = NO_UNCONDITIONAL_BRANCH
        self.seconds += time.perf_counter() - start

    def _extra_unconditional_pass(self, args: tuple, kwargs: dict) -> torch.Tensor:
        sample, timestep, rest = _unet_inputs(args, kwargs)
        rest["encoder_hidden_states"] = self._unconditional_embeds(sample.shape[0])
        rest["return_dict"] = False
        with self.own_unet_calls():
            return self.unet(sample, timestep, **rest)[0]

    @contextmanager
    def own_unet_calls(self):
        """The guard's own UNet calls inside (extra passes, residuals, gradients): the taps ignore
        them and no mitigation edit applies to them."""
        from ..mitigation.edits import editing

        saved = self.in_extra_pass
        self.in_extra_pass = True
        try:
            with editing(None):
                yield
        finally:
            self.in_extra_pass = saved

    def on_cross_attention(self, layer_name, attn, hidden_states, encoder_hidden_states, kwargs) -> None:
        start = time.perf_counter()
        if isinstance(encoder_hidden_states, tuple):  # IP-Adapter passes (text, image) embeddings
            encoder_hidden_states = encoder_hidden_states[0]
        query, key, _, _ = project(
            attn, hidden_states[self.cond_slice], encoder_hidden_states[self.cond_slice], kwargs.get("temb")
        )
        # float32 statistics whatever the pipeline dtype
        probs = torch.softmax(query.float() @ key.float().transpose(-1, -2) * attn.scale, dim=-1)
        self.trace.record_attention(self.step, probs.mean(dim=(1, 2)))  # (N, T): mean over heads, queries
        self.seconds += time.perf_counter() - start
