"""`GuardedPipelineMixin`: what turns a diffusers pipeline class into its guarded drop-in.

A guarded class is `class Guarded<X>(GuardedPipelineMixin, X)` with the `Family` of X. Calling it
takes exactly X's arguments (`inspect.signature` shows X's own) and returns X's output class with a
`memorization` field (one `MemorizationReport` per image); with `return_dict=False` it returns X's own
tuple, and the reports of the calling thread's last call are on `last_memorization`.
"""

from __future__ import annotations

import copy
import functools
import json
import numbers
import os
import threading
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..config import GuardConfig, coerce_config
from ..errors import MemguardTypeError, MemguardValueError, require_positive_int
from ..report import MemorizationReport
from .families import Family
from .guarded_call import GuardedCall
from .guarded_pass import LoopStart, latents_sink
from .outputs import parent_fields

CONCURRENT_CALL = (
    "this guarded pipeline object is already running a call in another thread; diffusers pipelines keep "
    "per-call state on the object (the scheduler's steps, guidance scale, interrupt flag), so concurrent "
    "calls on one object would mix images. Serve threads with one wrapper each: `memguard.guard(pipe)` per "
    "thread shares the weights and gives each wrapper its own scheduler and tokenizers"
)


class _ObjectState:
    """Per pipeline object: a lock that refuses concurrent calls, and each thread's last reports."""

    def __init__(self) -> None:
        self.busy = threading.Lock()
        self.local = threading.local()


_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()
# set while `from_pipe` builds a guarded pipeline: its closing blanket `to(dtype)` would cast the modules
# the new pipeline shares with the old one (an fp16 UNet to float32, for both), so it is skipped
_keep_module_dtypes: ContextVar[bool] = ContextVar("memguard_keep_module_dtypes", default=False)


# Run (each is idempotent) before a guarded pipeline is built: `from_pipe.py` registers the routing of
# diffusers' from_pipe here, so that it happens once a guarded pipeline exists, not on import.
before_first_construction: list = []


def _state(pipe) -> _ObjectState:
    with _states_lock:
        state = _states.get(pipe)
        if state is None:
            state = _states[pipe] = _ObjectState()
        return state


def _keep_model_offload(source, pipe) -> None:
    """`enable_model_cpu_offload()` on `source` keeps working on `pipe` (they share the modules):
    diffusers re-arms the offload at the end of each call from the pipeline object's own record of
    it, which `from_pipe` leaves behind, so the guarded call would leave its last model on the GPU."""
    hooks = getattr(source, "_all_hooks", None)
    if not hooks:
        return
    pipe._all_hooks = list(hooks)
    for name in ("_offload_device", "_offload_gpu_id"):
        if hasattr(source, name):
            setattr(pipe, name, getattr(source, name))


def unguarded_class(cls: type) -> type:
    """The pipeline class a guarded class guards: the first class of its MRO that is not guarded."""
    return next(c for c in cls.__mro__ if not issubclass(c, GuardedPipelineMixin))


class GuardedPipelineMixin:
    """Mix-in of every guarded pipeline class; see the module docstring."""

    family: ClassVar[Family]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "family" not in cls.__dict__ and not hasattr(cls, "family"):
            raise MemguardTypeError(f"{cls.__name__} needs a `family` (a memguard.pipelines.families.Family)")
        if "__call__" not in cls.__dict__:
            parent_call = super().__call__

            @functools.wraps(parent_call)  # inspect.signature shows the parent's parameters
            def __call__(self, *args, **kwargs):
                return self._guarded_call(parent_call.__get__(self), args, kwargs)

            __call__.__doc__ = (
                f"Call `{cls.family.parent.__name__}` under the memorization guard: the same arguments, the "
                "same output plus `memorization` (one report per image); see memguard's documentation.\n\n"
                + (parent_call.__doc__ or "")
            )
            cls.__call__ = __call__
        if "__init__" not in cls.__dict__:
            parent_init = super().__init__

            @functools.wraps(parent_init)  # diffusers reads the components from this signature
            def __init__(self, *args, **kwargs):
                for prepare in before_first_construction:
                    prepare()
                parent_init(self, *args, **kwargs)

            cls.__init__ = __init__

    # --- saving ---------------------------------------------------------------------------------
    def to_json_string(self) -> str:
        """The config `save_pretrained` writes, naming the pipeline class this one guards: the folder
        loads with diffusers' own loaders as the parent's would (the guard is not saved with it)."""
        config = json.loads(super().to_json_string())
        config["_class_name"] = unguarded_class(type(self)).__name__
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    # --- configuration -------------------------------------------------------------------------
    @property
    def guard_config(self) -> GuardConfig:
        return self.__dict__.get("_guard_config") or GuardConfig()

    @guard_config.setter
    def guard_config(self, config: GuardConfig | None) -> None:
        config = coerce_config(config)
        config.effective_metrics.register_pipeline(config.name)  # its series exist at zero from now on
        self.__dict__["_guard_config"] = config

    @property
    def last_memorization(self) -> list[MemorizationReport] | None:
        """The reports of the last call this thread made on this object (for `return_dict=False`,
        whose tuple is the parent's own); None before any call, and after a call that raised."""
        return getattr(_state(self).local, "reports", None)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, guard: GuardConfig | None = None, **kwargs
    ):
        """Load the parent pipeline's weights (hub id or folder) and guard it with `guard`."""
        config = coerce_config(guard)  # fail on a bad config before loading any weights
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        pipe.guard_config = config
        return pipe

    @classmethod
    def from_pipe(cls, pipeline, *, guard: GuardConfig | None = None, **kwargs):
        """A guarded pipeline of this class over `pipeline`'s modules: no weights are copied and no
        module changes dtype (unless `dtype`/`torch_dtype` is passed). A guarded source keeps its
        config unless `guard` is given."""
        from diffusers import DiffusionPipeline

        if not isinstance(pipeline, DiffusionPipeline):
            raise MemguardTypeError(f"from_pipe takes a diffusers pipeline object, got {type(pipeline).__name__}")
        if guard is None and isinstance(pipeline, GuardedPipelineMixin):
            guard = pipeline.guard_config
        config = coerce_config(guard)
        token = _keep_module_dtypes.set("dtype" not in kwargs and "torch_dtype" not in kwargs)
        try:
            pipe = super().from_pipe(pipeline, **kwargs)
        finally:
            _keep_module_dtypes.reset(token)
        pipe.guard_config = config
        if hasattr(pipeline, "_progress_bar_config"):
            pipe.set_progress_bar_config(**pipeline._progress_bar_config)
        _keep_model_offload(pipeline, pipe)
        return pipe

    def to(self, *args, **kwargs):
        if _keep_module_dtypes.get() and not args and set(kwargs) == {"dtype"}:
            return self
        return super().to(*args, **kwargs)

    # --- the guarded call ----------------------------------------------------------------------------
    def _guarded_call(self, parent_call, args: tuple, kwargs: dict):
        _state(self).local.reports = None  # a call that raises leaves no earlier call's reports behind
        try:
            arguments = self.family.bind(self, args, kwargs)
        except TypeError as error:  # an unknown or missing argument: the caller's, counted as the pipeline's
            config = self.guard_config
            GuardedCall._count(config.effective_metrics.observe_pipeline_error, config.name, error)
            raise
        return_dict = arguments.pop("return_dict", True)
        with self._exclusive(), torch.no_grad():
            output, reports = GuardedCall(self, self.family, self.guard_config, arguments).run(parent_call)
        _state(self).local.reports = reports
        if return_dict:
            return output
        return tuple(getattr(output, name) for name in parent_fields(type(output)))

    @contextmanager
    def _exclusive(self):
        lock = _state(self).busy
        if not lock.acquire(blocking=False):
            raise RuntimeError(CONCURRENT_CALL)
        try:
            yield
        finally:
            lock.release()

    def prepare_latents(self, *args, **kwargs):
        """The parent's; the running guarded pass is told where the loop starts (re-samples start there)."""
        prepared = super().prepare_latents(*args, **kwargs)
        sink = latents_sink.get()
        if sink is not None:
            # set_timesteps (and img2img's begin index) ran before prepare_latents: the copy is the loop's start
            scheduler = copy.deepcopy(self.scheduler) if sink.copy_scheduler else None
            sink.starts.append(
                LoopStart(self.family.start_of(prepared), float(self.scheduler.init_noise_sigma), scheduler)
            )
        return prepared

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        *,
        config: GuardConfig | None = None,
        num_images_per_prompt: int = 1,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = True,
        **call_kwargs,
    ) -> list[MemorizationReport]:
        """Score prompts at the decision step without finishing the images (audits, calibration).

        Image j of prompt i uses a CPU generator seeded with `seed + i * num_images_per_prompt + j`, so
        scores do not depend on `batch_size`. `call_kwargs` are further arguments of the pipeline call
        (an img2img `image` and `strength`, a ControlNet `image`...). Returns one report per image,
        prompt-major.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise MemguardTypeError("prompts must be a sequence of prompt strings")
        require_positive_int(batch_size, "batch_size")
        require_positive_int(num_images_per_prompt, "num_images_per_prompt")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise MemguardTypeError(f"seed must be an int, got {type(seed).__name__}")
        last_seed = seed + len(prompts) * num_images_per_prompt - 1  # image k is seeded with seed + k
        if seed < 0 or last_seed > 2**64 - 1:  # what a torch generator takes
            raise MemguardValueError(f"seed must be in 0..2**64 - {len(prompts) * num_images_per_prompt}, got {seed}")
        for name in ("prompt", "prompt_embeds", "generator", "output_type", "latents"):
            if name in call_kwargs:
                raise MemguardTypeError(f"score() sets {name!r} itself; do not pass it")
        config = config or self.guard_config
        if not config.enabled:
            raise MemguardValueError("score() needs an enabled GuardConfig")
        parent_call = super(GuardedPipelineMixin, type(self)).__call__.__get__(self)
        reports: list[MemorizationReport] = []
        starts = range(0, len(prompts), batch_size)
        with self._exclusive(), _progress_bar_disabled(self):
            for start in tqdm(starts, desc="memguard score", unit="batch", disable=not progress):
                batch = list(prompts[start : start + batch_size])
                first_image = start * num_images_per_prompt
                generators = [
                    torch.Generator("cpu").manual_seed(seed + first_image + j)
                    for j in range(len(batch) * num_images_per_prompt)
                ]
                arguments = self.family.bind(
                    self,
                    (),
                    dict(
                        call_kwargs,
                        **_per_prompt(self.family, call_kwargs, len(prompts), start, len(batch)),
                        prompt=batch,
                        num_images_per_prompt=num_images_per_prompt,
                        generator=generators,
                        output_type="latent",
                    ),
                )
                call = GuardedCall(self, self.family, config, arguments, stop_after_decision=True)
                reports.extend(call.run(parent_call)[1])
        return reports


def _per_prompt(family, call_kwargs: dict, num_prompts: int, start: int, size: int) -> dict:
    """The per-prompt arguments of one batch (a negative prompt...): one string for every prompt is
    repeated for the batch, one entry per prompt is cut to the batch's."""
    cut = {}
    for name in family.per_prompt_arguments:
        value = call_kwargs.get(name)
        if isinstance(value, str):
            cut[name] = [value] * size
        elif isinstance(value, (list, tuple)):
            if len(value) != num_prompts:
                raise MemguardValueError(f"{name} has {len(value)} entries for {num_prompts} prompts")
            cut[name] = list(value[start : start + size])
        elif isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == num_prompts:
            cut[name] = value[start : start + size]
    return cut


@contextmanager
def _progress_bar_disabled(pipe):
    """Silence diffusers' per-call progress bar inside a batched job (restored afterwards)."""
    saved = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(**{**saved, "disable": True})
    try:
        yield
    finally:
        pipe._progress_bar_config = saved
