"""The mitigations. Each is one small class; combine them with `Compose`, choose by verdict with `ByIntent`.

Knobs and their papers' values are the defaults; `benchmarks/mitigation.py` sweeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..intent.resolver import without_spans
from .base import MitigationContext, ResamplePlan, fresh_noise, require_mitigation, require_number
from .edits import PREDICTION_TYPES, AttentionEdit, GuidanceEdit, RepulsionEdit, chain, guided_clean_estimate


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _noise_magnitude(context: MitigationContext, latents: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
    """Per-element RMS of eps(x, cond) - eps(x, uncond) at the first step, with the first step's other
    UNet inputs replayed (`latents`: the first UNet input's denoised channels; None: the first
    step's own): the noise-magnitude score, differentiable."""
    eps_uncond, eps_text = context.inputs.predict(context.unet, latents, cond={"encoder_hidden_states": cond})
    diff = (eps_text.float() - eps_uncond.float()).flatten(1)
    return diff.norm(dim=1) / diff.shape[1] ** 0.5


@dataclass(frozen=True)
class ReSeed:
    """New starting noise only; the prompt is untouched. Cheapest; weak against prompt-driven copies."""

    name: str = "reseed"

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        if context.latents is None:  # the pipeline draws new noise for its init image on every re-sample
            return plan.with_(self.name + "(new noise drawn by the pipeline)")
        return plan.with_(self.name, latents=fresh_noise(context.seed, context.latents))


SCOPES = ("triggers", "unintended", "all")


def _require_scope(scope, where: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"{where} must be one of {SCOPES}, got {scope!r}")


def _targets(context: MitigationContext, scope: str) -> list[int]:
    """Token positions a mitigation may change: the unintended trigger words ("triggers"), every
    word outside the intended spans ("unintended"), or every position outside them, end and padding
    tokens included ("all": these summary tokens carry the whole prompt in a causal text encoder).
    Never an intended token, never the begin token."""
    _require_scope(scope, "scope")
    if scope == "all":
        tokens = range(1, context.cond_embeds.shape[1])
    else:
        tokens = context.unintended_tokens if scope == "triggers" else context.other_tokens
    intended = set(context.intended_tokens)
    return [t for t in tokens if t not in intended and t > 0]


def _untouched_text(context: MitigationContext, scope: str) -> str | None:
    """The words of the prompt that a mitigation of `scope` leaves as they are: the intended spans alone
    ("unintended", "all"), or the prompt without its unintended trigger words ("triggers"). None
    when the call passed embeddings (there is no text)."""
    prompt = context.prompt
    if prompt is None:
        return None
    if scope == "triggers":
        return without_spans(prompt, list(context.unintended_spans))
    return " ".join(prompt[start:end] for start, end in sorted(context.intended_spans))


@dataclass(frozen=True)
class AttentionRescale:
    """Ren et al. 2024: mask the unintended tokens in cross-attention (`scope`: the trigger words,
    or every word outside the intended spans) and scale the begin token's logit by `begin_scale`
    (paper: 1.1-1.5). Intended tokens are never masked."""

    begin_scale: float = 1.25
    scope: str = "triggers"
    name: str = "attention_rescale"

    def __post_init__(self) -> None:
        require_number(self.begin_scale, "AttentionRescale.begin_scale", above=0)
        _require_scope(self.scope, "AttentionRescale.scope")

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        masked = tuple(_targets(context, self.scope))
        edit = AttentionEdit(self.begin_scale, masked)
        pooled = _untouched_text(context, self.scope) if masked else plan.pooled_text
        return plan.with_(self.name, edits=replace(plan.edits, attention=edit), pooled_text=pooled)


@dataclass(frozen=True)
class PromptEmbeddingOptimization:
    """Wen et al. 2024: adjust the embeddings of the unintended trigger tokens only, to lower the
    noise magnitude at the first step (AdamW, lr 0.05, at most 10 iterations, stop under the target)."""

    lr: float = 0.05
    max_iterations: int = 10
    target: float | None = None  # None: the context's noise target (see MitigationContext)
    scope: str = "triggers"
    name: str = "prompt_embedding_opt"

    def __post_init__(self) -> None:
        require_number(self.lr, "PromptEmbeddingOptimization.lr", above=0)
        require_number(self.max_iterations, "PromptEmbeddingOptimization.max_iterations", low=1, whole=True)
        if self.target is not None:
            require_number(self.target, "PromptEmbeddingOptimization.target")
        _require_scope(self.scope, "PromptEmbeddingOptimization.scope")

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        base = plan.prompt_embeds if plan.prompt_embeds is not None else context.cond_embeds
        tokens = _targets(context, self.scope)
        if not tokens:
            return plan.with_(self.name + "(no unintended tokens)")
        unet = context.unet
        sample = None if plan.latents is None else (plan.latents * context.input_scale).to(unet.device, unet.dtype)
        target = context.noise_target if self.target is None else self.target
        mask = torch.zeros(base.shape[1], 1, dtype=torch.float32, device=base.device)
        mask[tokens] = 1
        # float32 whatever the pipeline's dtype: in float16 Adam's eps rounds to 0 and the untouched
        # positions (zero gradient) become 0/0 = NaN
        delta = torch.zeros(base.shape, dtype=torch.float32, device=base.device, requires_grad=True)
        optimizer = torch.optim.AdamW([delta], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.max_iterations):
                magnitude = _noise_magnitude(context, sample, base + (delta * mask).to(base.dtype))
                if target is not None and float(magnitude.detach().mean()) < target:
                    break
                optimizer.zero_grad()
                magnitude.mean().backward(inputs=[delta])
                optimizer.step()
        # The pooled embedding (SDXL) is not optimized: it keeps only the words left unchanged.
        embeds = (base + (delta.detach() * mask).to(base.dtype)).detach()
        return plan.with_(self.name, prompt_embeds=embeds, pooled_text=_untouched_text(context, self.scope))


@dataclass(frozen=True)
class InitialNoiseOptimization:
    """Jeon et al. 2025 (SAIL): optimize the starting noise x_T to lower the first-step magnitude,
    with a penalty that keeps x_T's norm that of a Gaussian; the prompt is untouched."""

    lr: float = 0.05
    max_iterations: int = 10
    norm_weight: float = 1.0
    target: float | None = None
    name: str = "initial_noise_opt"

    def __post_init__(self) -> None:
        require_number(self.lr, "InitialNoiseOptimization.lr", above=0)
        require_number(self.max_iterations, "InitialNoiseOptimization.max_iterations", low=1, whole=True)
        require_number(self.norm_weight, "InitialNoiseOptimization.norm_weight", low=0)
        if self.target is not None:
            require_number(self.target, "InitialNoiseOptimization.target")

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        if plan.latents is None:
            return plan.with_(self.name + "(no starting noise: this pipeline starts from an image)")
        unet = context.unet
        cond = plan.prompt_embeds if plan.prompt_embeds is not None else context.cond_embeds
        target = context.noise_target if self.target is None else self.target
        x = plan.latents.detach().to(unet.device, torch.float32).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.max_iterations):
                magnitude = _noise_magnitude(context, (x * context.input_scale).to(unet.dtype), cond).mean()
                if target is not None and float(magnitude.detach()) < target:
                    break
                norm_penalty = (x.pow(2).mean() - 1).pow(2)
                optimizer.zero_grad()
                (magnitude + self.norm_weight * norm_penalty).backward(inputs=[x])
                optimizer.step()
        return plan.with_(self.name, latents=x.detach().to(plan.latents.dtype))


@dataclass(frozen=True)
class GuidanceSchedule:
    """Jain et al.: no guidance (`early_scale=0`) or opposite guidance (e.g. -2) while the timestep
    is above `until_timestep`, then the requested scale. The first-step score cannot see it, so the
    re-sample is not re-scored."""

    early_scale: float = 0.0
    until_timestep: float = 650.0
    name: str = "guidance_schedule"

    def __post_init__(self) -> None:
        require_number(self.early_scale, "GuidanceSchedule.early_scale")
        require_number(self.until_timestep, "GuidanceSchedule.until_timestep", low=0)

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        edit = GuidanceEdit(context.guidance_scale, self.early_scale, self.until_timestep)
        return plan.with_(self.name, edits=replace(plan.edits, guidance=edit), rescored=False)


@dataclass(frozen=True)
class Dissimilarity:
    """A re-sample that keeps the whole prompt and moves away from the flagged image: new starting
    noise, and at each step dissimilarity guidance (Chen et al. 2024) away from the flagged
    generation's own first clean estimate, for as long as the new one still resembles it
    (`RepulsionEdit`: the strength and the similarity floor). Only the detail is compared and pushed:
    the layout (each latent pixel's average over a box `layout_share` of the latent's side wide) is
    what the prompt asks for and stays (`layout_share=0` keeps only each channel's mean; the testbed's
    figures for both are in docs/testbed.md). Chen et al. push away from the nearest
    training image, which needs an index of the training set; the flagged generation's first
    estimate is what the model was about to copy, and costs one UNet call. Nothing is removed from
    the prompt, so a memorized caption that is also an ordinary request keeps being drawn. The
    first-step score cannot see the edit (the prompt is unchanged), so the re-sample is not
    re-scored: pair it with copy verification (`GuardConfig.verification`) to check the result.

    The push works on a prompt that pins the image down: a verbatim copy, whose first clean estimate
    from new noise has the flagged one's detail (the testbed: cosine 0.97-0.99). A flagged prompt
    whose fresh start differs in detail (under `pinned_similarity`) copies something the detail does
    not show, e.g. a template's layout drawn in other colours (Webster et al. 2023; the testbed's
    templates: 0.26-0.81), and pushing on the detail leaves that copy alone. With `unpinned` set (e.g.
    a mitigation that hides the words) such a prompt gets it instead; None: push anyway. The check
    costs one more guided UNet call."""

    strength: float = 2.0
    similarity_floor: float = 0.7
    layout_share: float = 0.45  # 0: keep only each channel's mean
    unpinned: object | None = None  # a Mitigation for prompts a fresh start does not pin down; None: push anyway
    pinned_similarity: float = 0.9  # detail cosine of a fresh start's first estimate to the flagged one's
    name: str = "dissimilarity"

    def __post_init__(self) -> None:
        for field_name in ("strength", "similarity_floor", "layout_share", "pinned_similarity"):
            require_number(getattr(self, field_name), f"Dissimilarity.{field_name}")
        if not self.strength > 0:
            raise ValueError(f"Dissimilarity.strength must be > 0, got {self.strength}")
        if not -1 <= self.similarity_floor < 1:  # a cosine similarity; -1: push at every step
            raise ValueError(f"Dissimilarity.similarity_floor must be in [-1, 1), got {self.similarity_floor}")
        if not 0 <= self.layout_share < 1:
            raise ValueError(f"Dissimilarity.layout_share must be in [0, 1), got {self.layout_share}")
        if not -1 <= self.pinned_similarity <= 1:
            raise ValueError(f"Dissimilarity.pinned_similarity must be in [-1, 1], got {self.pinned_similarity}")
        if self.unpinned is not None:
            require_mitigation(self.unpinned, "Dissimilarity.unpinned")

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        if context.latents is None:
            return self._cannot_push(plan, context, "no anchor: this pipeline starts from an image")
        config = context.pipe.scheduler.config
        alphas = getattr(context.pipe.scheduler, "alphas_cumprod", None)
        prediction_type = config.get("prediction_type", "epsilon")
        if alphas is None or prediction_type not in PREDICTION_TYPES:
            return self._cannot_push(plan, context, "scheduler without a diffusion noise schedule")
        inputs = context.inputs
        guided = context.guidance_scale > 1 and inputs.uncond is not None
        timestep = float(torch.as_tensor(inputs.timestep).flatten()[0])

        @torch.no_grad()
        def first_estimate(sample: torch.Tensor | None) -> torch.Tensor:
            """The guided clean estimate at the first step from `sample` (None: the flagged generation's)."""
            eps_uncond, eps_text = inputs.predict(context.unet, sample, guided=guided)
            x_t = inputs.latents if sample is None else sample
            x0, _ = guided_clean_estimate(
                eps_uncond, eps_text, x_t, timestep, alphas, prediction_type, context.guidance_scale
            )
            return x0

        edit = RepulsionEdit(
            first_estimate(None),
            alphas.detach().float().cpu(),
            prediction_type,
            context.guidance_scale,
            self.strength,
            self.similarity_floor,
            self.layout_share,
        )
        latents = fresh_noise(context.seed, context.latents)
        if self.unpinned is not None:  # does the prompt pin the new noise's first estimate to the flagged one?
            start = first_estimate((latents * context.input_scale).to(inputs.latents.dtype))
            if float(edit.similarity(start).min()) < self.pinned_similarity:
                return self._cannot_push(plan, context, "unpinned")
        return plan.with_(
            self.name,
            latents=latents,
            edits=replace(plan.edits, guidance=chain(plan.edits.guidance, edit)),
            rescored=False,
        )

    def _cannot_push(self, plan: ResamplePlan, context: MitigationContext, why: str) -> ResamplePlan:
        """The re-sample when the push cannot act: `unpinned`'s, or the plan unchanged without one."""
        if self.unpinned is None:
            return plan.with_(f"{self.name}({why})")
        return self.unpinned.apply(plan.with_(f"{self.name}({why}: the fallback instead)"), context)


@dataclass(frozen=True)
class RandomTokenAddition:
    """Somepalli et al. 2023: add `n_tokens` random words to the prompt, after the last intended
    span (the text encoder is causal, so the intended spans' embeddings stay exactly the same)."""

    n_tokens: int = 4
    name: str = "random_tokens"

    def __post_init__(self) -> None:
        require_number(self.n_tokens, "RandomTokenAddition.n_tokens", low=1, whole=True)

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        if plan.prompt is None:
            return plan.with_(self.name + "(no prompt text)")
        words = _vocabulary_words(context.pipe.tokenizer)
        generator = _generator(context.seed + 1)
        picks = torch.randint(len(words), (self.n_tokens,), generator=generator).tolist()
        added = " ".join(words[i] for i in picks)
        return plan.with_(self.name, prompt=f"{plan.prompt} {added}", prompt_embeds=None)


_VOCAB_CACHE: dict[int, list[str]] = {}


def _vocabulary_words(tokenizer) -> list[str]:
    """Whole alphabetic words of the tokenizer's vocabulary (CLIP marks them with '</w>')."""
    key = id(tokenizer)
    if key not in _VOCAB_CACHE:
        vocabulary = tokenizer.get_vocab()
        words = sorted(t[:-4] for t in vocabulary if t.endswith("</w>") and t[:-4].isalpha() and len(t) > 6)
        _VOCAB_CACHE[key] = words or sorted(t for t in vocabulary if t.isalpha())
    return _VOCAB_CACHE[key]


@dataclass(frozen=True)
class KeepIntendedPrefix:
    """For mixed prompts: re-generate from the prompt cut right after its last intended span, so
    the unintended words that follow (the memorized photo's caption) are gone. The text encoder is
    causal, so the intended spans' tokens and embeddings stay exactly the same; other words before
    the first intended span stay. Where unintended trigger words come *before* an intended span
    ("<memorized caption>, with the Mona Lisa") no cut removes them, and removing the trigger words
    alone leaves the rest of the caption to recall the photo (on the testbed it did for 4 of 6 such
    prompts): the re-sample then keeps the intended spans alone. No intended span (or no prompt text):
    no change."""

    name: str = "keep_intended_prefix"

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        if plan.prompt is None or not context.intended_spans:
            return plan.with_(self.name + "(no intended span)")
        end = max(stop for _, stop in context.intended_spans)
        if not any(stop <= end for _, stop in context.unintended_spans):
            return plan.with_(self.name, prompt=plan.prompt[:end], prompt_embeds=None)
        concepts = _untouched_text(context, "unintended")  # the intended spans, in prompt order
        return plan.with_(
            f"{self.name}(the concepts alone: trigger words before them)", prompt=concepts, prompt_embeds=None
        )


@dataclass(frozen=True)
class ByIntent:
    """One mitigation for "unintended" images (no intended span in the prompt) and another for
    "mixed" ones (an intended concept inside a memorized image): they need opposite things, removing
    the whole prompt's pull versus keeping the concept's."""

    unintended: object  # a Mitigation
    mixed: object  # a Mitigation

    def __post_init__(self) -> None:
        for label in ("unintended", "mixed"):
            require_mitigation(getattr(self, label), f"ByIntent.{label}")

    @property
    def name(self) -> str:
        return f"by_intent(unintended={self.unintended.name}, mixed={self.mixed.name})"

    def apply(self, plan: ResamplePlan, context: MitigationContext) -> ResamplePlan:
        chosen = self.mixed if context.intended_spans else self.unintended
        return chosen.apply(plan, context)
