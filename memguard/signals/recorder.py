"""`SignalRecorder`: turns the taps' raw callbacks into a `SignalTrace` for one pipeline call."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..cross_attention import project
from .edits import current as current_edits
from .edits import editing
from .needs import SignalNeeds
from .replay import ImageInputs, UNetCall, compose_sample, expand_rows, merge, select_rows
from .taps import eager_module, install_attention_taps, is_compiled, remove_attention_taps
from .trace import SignalTrace

# Why the noise signal may be missing for a call; shown in reports.
NO_UNCONDITIONAL_BRANCH = (
    "guidance is off (guidance_scale <= 1), so there is no unconditional branch to compare with; "
    "set GuardConfig(unconditional_pass=True) to pay one extra UNet pass per step up to the decision step"
)


_POSITIONAL = ("sample", "timestep", "encoder_hidden_states")


def _unet_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, object, dict]:
    """(sample, timestep, the other keyword arguments) of a UNet2DConditionModel call."""
    rest = dict(kwargs)
    for name, value in zip(_POSITIONAL, args, strict=False):
        rest[name] = value
    rest.pop("return_dict", None)
    return rest.pop("sample"), rest.pop("timestep"), rest


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
        unconditional_inputs: Callable[[], dict] | None = None,
        needs: SignalNeeds | None = None,
        end_token_index: torch.Tensor | None = None,
        last_step: int | None = None,
        schedule: Callable[[], object] | None = None,
    ):
        self.unet = unet  # the module the pipeline calls (the taps match it)
        self.eager = eager_module(unet)  # what the guard's own evaluations run (never a compiled graph)
        self._compiled = is_compiled(unet)
        self.needs = needs or SignalNeeds()
        self._end_token_index = end_token_index  # (N,) position of each image's end token, if known
        self._last_step = last_step  # 0-based index of the loop's last step
        self.trace = SignalTrace(end_token_index=end_token_index)
        self.step = 0
        self.num_images: int | None = None
        self.seconds = 0.0
        self.noise_unavailable_reason: str | None = None
        self.failure: BaseException | None = None  # the guard's own first error; recording stops there
        self._guidance_enabled = guidance_enabled
        self._record_until = record_until_step  # record steps < this; None: every step
        self.attention_layers = attention_layers  # None: attention is not recorded
        # keyword arguments of an unconditional UNet call (text states, SDXL's pooled embeddings...),
        # for one extra pass per step when guidance is off (GuardConfig.unconditional_pass)
        self._unconditional_inputs = unconditional_inputs
        self.cond_slice = slice(None)  # the text-conditioned rows of the current UNet batch
        self.in_extra_pass = False  # a UNet call of the guard's own (ignored by the taps)
        self._timestep = 0.0  # the current UNet call's timestep, as the pipeline passed it
        self.first_call: UNetCall | None = None  # the loop's first UNet call, replayed by the guard
        self._cfg_now = False
        # the running schedule's timesteps (the scheduler's `timesteps`), read at the first step for the
        # low-noise pass (SignalNeeds.guidance_alignment_first_step)
        self.schedule = schedule
        self._latents: torch.Tensor | None = None  # float32 copy of the latents the next step starts from

    @property
    def current_timestep(self) -> float:
        """The current UNet call's timestep. Reading a device tensor synchronizes with the device, so
        it is read only on recorded steps and by re-sample edits, never on every step of a call."""
        return _as_float(self._timestep)

    def set_last_step(self, last_step: int) -> None:
        """The 0-based index of the loop's last step, once the loop knows it."""
        self._last_step = last_step

    # --- the first step's inputs ----------------------------------------------------------------
    @property
    def first_sample(self) -> torch.Tensor | None:
        """(N, C_in, h, w) the first step's UNet input of the text-conditioned rows."""
        call = self.first_call
        return None if call is None else call.sample[call.batch - call.num_images :]

    @property
    def first_cond_states(self) -> torch.Tensor | None:
        """(N, T, D) the text states of the first step."""
        states = None if self.first_call is None else self.first_call.kwargs.get("encoder_hidden_states")
        return states[states.shape[0] - self.first_call.num_images :] if isinstance(states, torch.Tensor) else None

    def image_inputs(self, index: int) -> ImageInputs:
        """Image `index`'s first-step UNet inputs (the first call must have run). With guidance off and
        the extra unconditional pass on, its unconditional row is the one that pass evaluated, so the
        guard's own evaluations (intent, attribution, mitigations) have a branch to compare with."""
        inputs = self.first_call.image(index)
        if inputs.uncond is None and self._unconditional_inputs is not None:
            rows = select_rows(self._unconditional_inputs(), self.first_call.num_images, slice(index, index + 1))
            inputs = replace(inputs, uncond=merge(inputs.cond, rows))
        return inputs

    def release_first_call(self) -> None:
        """Drop the kept first-step inputs (ControlNet residuals can be large) once nothing needs them."""
        self.first_call = None

    # --- what to record -------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        """Called by the taps when reading a signal raised: keep the first error, read nothing more
        (the guarded call then applies `GuardConfig.on_error`)."""
        if self.failure is None:
            self.failure = error

    def recording_now(self) -> bool:
        return self.failure is None and not self.in_extra_pass and self._records(self.step)

    def _records(self, step: int) -> bool:
        return self._record_until is None or step < self._record_until

    def wants_attention(self, layer_name: str) -> bool:
        if self.attention_layers is None or layer_name not in self.attention_layers:
            return False
        if self.failure is not None or self.in_extra_pass:
            return False
        # post hoc detectors read the last step's end-token maps even when earlier steps stop recording
        return self.recording_now() or (self.needs.end_token_map_last_step and self.step == self._last_step)

    # --- taps -----------------------------------------------------------------------------------
    def on_unet_call(self, args: tuple, kwargs: dict) -> None:
        if self.in_extra_pass or self.failure is not None:
            return
        start = time.perf_counter()
        sample, timestep, rest = _unet_inputs(args, kwargs)
        batch = sample.shape[0]
        # The CFG batch is [uncond, cond]; a user's callback may turn guidance off mid-run.
        cfg = self._guidance_enabled() and batch % 2 == 0
        images = batch // 2 if cfg else batch
        self.num_images = self.num_images or images
        self.trace.num_images = self.num_images
        self.cond_slice = slice(images, None) if cfg else slice(None)
        self._cfg_now = cfg
        self._timestep = timestep  # read as a number only when needed: that read waits for the device
        if self.step == 0 and self.first_call is None:
            self.first_call = UNetCall(
                sample=sample.detach(),
                timestep=timestep,
                kwargs=rest,
                guided=cfg,
                latent_channels=getattr(getattr(self.unet, "config", None), "out_channels", sample.shape[1]),
            )
        if self.recording_now():
            self.trace.at(self.step).timestep = self.current_timestep
        self.seconds += time.perf_counter() - start

    def on_unet_output(self, args: tuple, kwargs: dict, output) -> None:
        if not self.recording_now():
            return
        start = time.perf_counter()
        if self._compiled and self.attention_layers is not None:
            self._read_attention_eagerly(args, kwargs)
        eps = output[0] if isinstance(output, (tuple, list)) else output.sample
        keep_map = self.needs.noise_map_first_step and self.step == 0
        alignment = self.needs.guidance_alignment_first_step and self.step == 0
        if self._cfg_now:
            eps_uncond, eps_text = eps.chunk(2)
            self.trace.record_noise(self.step, eps_text, eps_uncond, keep_map)
            if self.needs.hessian_first_step and self.step == 0:
                self.trace.record_hessian(0, self._hessian_product(args, kwargs, eps_text - eps_uncond))
            if alignment:
                self._low_noise_alignment(args, kwargs)
        elif self._unconditional_inputs is not None:
            self.trace.record_noise(self.step, eps, self._extra_unconditional_pass(args, kwargs), keep_map)
            if alignment:
                self._low_noise_alignment(args, kwargs)
        else:
            self.noise_unavailable_reason = NO_UNCONDITIONAL_BRANCH
        self.seconds += time.perf_counter() - start

    def _hessian_product(self, args: tuple, kwargs: dict, direction: torch.Tensor) -> torch.Tensor:
        """(J_text - J_uncond) v with v = eps_text - eps_uncond: how sharply the text-conditional
        score changes along its own direction (Jeon et al. 2025), one forward-mode pass.

        Forward-mode AD is not implemented for the fused attention kernels, so this pass uses the
        math kernel, which differs only in speed."""
        sample, timestep, rest = _unet_inputs(args, kwargs)
        template = sample[self.cond_slice].detach()
        x = template[:, : direction.shape[1]]  # the denoised channels (an inpainting UNet takes more)

        def difference(latents: torch.Tensor) -> torch.Tensor:
            inputs = compose_sample(latents, template)
            out = self.eager(torch.cat([inputs, inputs]), timestep, **rest, return_dict=False)[0]
            uncond, text = out.chunk(2)
            return text - uncond

        with self.own_unet_calls(), sdpa_kernel(SDPBackend.MATH):
            _, product = torch.func.jvp(difference, (x,), (direction.detach().to(x.dtype),))
        return product

    def low_noise_timestep(self, timestep):
        """The low-noise pass's timestep, shaped like the pipeline's `timestep`: the running schedule's
        third-to-last (its last when shorter), where Asthana & Belagiannis read the alignment. None
        without a schedule. Stays on the device: nothing is read as a number."""
        schedule = None if self.schedule is None else self.schedule()
        if schedule is None or len(schedule) == 0:
            return None
        low = schedule[-3] if len(schedule) >= 3 else schedule[-1]
        if isinstance(timestep, torch.Tensor):
            low = torch.as_tensor(low, device=timestep.device, dtype=timestep.dtype)
            return low.expand(timestep.shape) if timestep.dim() else low
        return low

    def _low_noise_alignment(self, args: tuple, kwargs: dict) -> None:
        """The first step's UNet input (the scaled x_T and every conditioning input, ControlNet residuals
        included) evaluated again at the low-noise timestep: the cosine between the unconditional
        prediction and the guidance (Asthana & Belagiannis 2026). Under guidance one CFG-batch call;
        with guidance off (GuardConfig.unconditional_pass) two, the text and the unconditional branch.
        A re-sample's attention edit applies as it does to the pipeline's own call."""
        sample, timestep, rest = _unet_inputs(args, kwargs)
        low = self.low_noise_timestep(timestep)
        if low is None:
            return  # no schedule to read: the signal is missing (the detector reports unavailable)
        if self._cfg_now:
            with self.own_unet_calls(keep_edits=True):
                eps_uncond, eps_text = self.eager(sample, low, **rest, return_dict=False)[0].chunk(2)
        else:
            with self.own_unet_calls(keep_edits=True):
                eps_text = self.eager(sample, low, **rest, return_dict=False)[0]
            unconditional = expand_rows(self._unconditional_inputs(), sample.shape[0])
            with self.own_unet_calls():
                eps_uncond = self.eager(sample, low, **merge(rest, unconditional), return_dict=False)[0]
        self.trace.record_guidance_alignment(0, eps_text, eps_uncond)

    # --- the loop's latents ---------------------------------------------------------------------
    def on_step_latents(self, step: int, latents: torch.Tensor | None, start: torch.Tensor | None = None) -> None:
        """From the loop's step callback: the latents step `step` ended with. Records the RMS of the
        step's update (SignalNeeds.latent_updates) against the latents it started from: `start` (the
        loop's starting latents) at step 0, then what `continue_from` kept."""
        if not self.needs.latent_updates or self.failure is not None or not self._records(step):
            return
        began = time.perf_counter()
        try:
            before = start if step == 0 else self._latents
            if before is not None and latents is not None:
                self.trace.record_latent_update(step, before, latents)
        except Exception as error:  # the guard's failure: GuardConfig.on_error decides, the loop goes on
            self.fail(error)
        self.seconds += time.perf_counter() - began

    def continue_from(self, step: int, latents: torch.Tensor | None) -> None:
        """The latents step `step` starts from (what the step callbacks left): a float32 copy is kept
        while that step is recorded, so nothing that later changes that tensor in place (the scheduler,
        a callback) alters the update."""
        keep = self.needs.latent_updates and self.failure is None and self._records(step) and latents is not None
        self._latents = latents.detach().to(torch.float32, copy=True) if keep else None

    def _read_attention_eagerly(self, args: tuple, kwargs: dict) -> None:
        """A compiled UNet's graph is never touched: its attention is read by running the same inputs
        through the original module with the attention taps (one extra UNet evaluation per recorded
        step; set GuardConfig(record_attention=False) with a noise detector to avoid it)."""
        originals = install_attention_taps(self.eager)
        try:
            self.eager(*args, **kwargs)
        finally:
            remove_attention_taps(self.eager, originals)

    def _extra_unconditional_pass(self, args: tuple, kwargs: dict) -> torch.Tensor:
        sample, timestep, rest = _unet_inputs(args, kwargs)
        unconditional = expand_rows(self._unconditional_inputs(), sample.shape[0])  # one row for the batch
        with self.own_unet_calls():
            return self.eager(sample, timestep, **merge(rest, unconditional), return_dict=False)[0]

    @contextmanager
    def own_unet_calls(self, keep_edits: bool = False):
        """The guard's own UNet calls inside (extra passes, residuals, gradients): the taps ignore
        them and no mitigation edit applies to them (`keep_edits`: the active edits do, for a pass
        that must see the model a re-sample runs)."""
        saved = self.in_extra_pass
        self.in_extra_pass = True
        try:
            with editing(current_edits() if keep_edits else None):
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
        logits = query.float() @ key.float().transpose(-1, -2) * attn.scale
        edit = current_edits()
        if edit is not None and edit.attention is not None:
            logits = edit.attention.edit_logits(logits)  # score what a re-sample's model really attends to
        probs = torch.softmax(logits, dim=-1)
        layer = layer_name if self.needs.attention_by_layer else None
        self.trace.layer_queries[layer_name] = probs.shape[2]
        self.trace.record_attention(self.step, probs.mean(dim=(1, 2)), layer)  # (N, T): mean over heads, queries
        if self.needs.attention_query_entropy:  # how spread each query's own attention is, not their mean's
            self.trace.record_query_entropy(self.step, layer_name, torch.special.entr(probs).sum(-1).mean(dim=(1, 2)))
        if (
            self.needs.end_token_map_last_step
            and self._end_token_index is not None
            and self.step == self._last_step
            and self.first_sample is not None
        ):
            self.trace.record_end_token_map(self.step, self._end_token_map(probs))
        self.seconds += time.perf_counter() - start

    def _end_token_map(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, H, W) attention on each image's end token, mean over heads, at the latent resolution."""
        n, _, queries, _ = probs.shape
        index = self._end_token_index.to(probs.device).view(n, 1, 1, 1).expand(-1, probs.shape[1], queries, 1)
        per_query = probs.gather(-1, index).squeeze(-1).mean(dim=1)  # (N, Q)
        height, width = self.first_sample.shape[-2:]
        h = max(1, round(height * math.sqrt(queries / (height * width))))
        w = queries // h
        maps = per_query.view(n, 1, h, w)
        return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
