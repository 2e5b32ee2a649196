"""Policy and re-sampling: early stops, attempts, fallbacks, intended images untouched, and
mitigations that never touch intended spans."""

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from helpers import UNetCallCounter, seeded
from prometheus_client import CollectorRegistry

import memguard
from memguard import GuardConfig, IntendedConcept, IntentRegistry, Policy
from memguard.intent.resolver import without_spans
from memguard.metrics import GuardMetrics
from memguard.mitigation import (
    DEFAULT_MITIGATION,
    AttentionRescale,
    ByIntent,
    Compose,
    Escalate,
    GuidanceEdit,
    GuidanceSchedule,
    InitialNoiseOptimization,
    KeepIntendedPrefix,
    MitigationContext,
    PromptEmbeddingOptimization,
    RandomTokenAddition,
    RepulsionEdit,
    ResamplePlan,
    ReSeed,
)
from memguard.pipelines.guarded_pass import GuardedPass
from memguard.signals import ImageInputs
from memguard.testbed.tiny import tiny_pipeline

STEPS = 3
PROMPT = "a portrait of the Velmora crest on the Kettle Hill Gazette cover"
REGISTRY = IntentRegistry((IntendedConcept("Velmora crest", ("the Velmora emblem",)),))


def _call(pipe, prompt=PROMPT, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("generator", seeded(1, 5))
    kwargs.setdefault("output_type", "np")
    return pipe(prompt, **kwargs)


def test_clean_images_are_bit_identical_under_a_resampling_policy(shared_base_pipe):
    reference = _call(shared_base_pipe, ["a cat", "a dog"], generator=seeded(2)).images
    out = _call(memguard.guard(shared_base_pipe, GuardConfig(threshold=1e9)), ["a cat", "a dog"], generator=seeded(2))
    assert np.array_equal(reference, out.images)  # the guard drew the starting noise exactly as diffusers does
    assert [r.action for r in out.memorization] == ["none", "none"]


RESEED_AND_MASK = Compose((ReSeed(), AttentionRescale(scope="all")))


def test_every_attempt_stops_at_the_decision_step_then_the_fallback_flags(shared_base_pipe):
    config = GuardConfig(threshold=-1.0, policy=Policy(max_attempts=3, fallback="flag"), mitigation=RESEED_AND_MASK)
    counter = UNetCallCounter(shared_base_pipe.unet)
    out = _call(memguard.guard(shared_base_pipe, config), "Walking the Amber Road")
    counter.remove()
    # first generation + 2 failed re-samples stop after step 1; the 3rd runs to the end (flagged)
    assert counter.calls == 1 + 2 + STEPS
    (report,) = out.memorization
    assert report.action == "flagged" and report.intent == "unintended" and report.resamples == 3
    assert [a.mitigation for a in report.attempts] == [None] + ["reseed+attention_rescale"] * 3
    assert report.reason.startswith("still memorized after 3 re-sample(s)")
    assert [a.stopped_at_step for a in report.attempts] == [1, 1, 1, None]
    assert len({a.score for a in report.attempts}) > 1  # re-seeded: each attempt is a new sample


def test_a_retry_starts_from_new_noise_even_with_a_deterministic_mitigation(shared_base_pipe):
    # Masking the trigger words alone repeats the same image from the same noise: a retry after a
    # memorized (or copy-verified) re-sample must not be that image again.
    config = GuardConfig(threshold=-1.0, policy=Policy(max_attempts=3, fallback="flag"), mitigation=AttentionRescale())
    out = _call(memguard.guard(shared_base_pipe, config), "Walking the Amber Road")
    (report,) = out.memorization
    assert report.resamples == 3 and [a.mitigation for a in report.attempts[1:]] == ["attention_rescale"] * 3
    assert len({a.score for a in report.attempts[1:]}) == 3
    # the first re-sample still starts where the first generation did: the same edit on the same noise
    first_retry = memguard.guard(shared_base_pipe, config.replace(policy=Policy(max_attempts=1, fallback="flag")))
    again = _call(first_retry, "Walking the Amber Road").memorization[0]
    assert again.attempts[1].score == report.attempts[1].score


def test_fallback_block_blanks_the_image_without_finishing_it(shared_base_pipe):
    config = GuardConfig(threshold=-1.0, policy=Policy(max_attempts=2, fallback="block"), mitigation=RESEED_AND_MASK)
    counter = UNetCallCounter(shared_base_pipe.unet)
    out = _call(memguard.guard(shared_base_pipe, config))
    counter.remove()
    assert counter.calls == 3  # three generations, each stopped after step 1
    assert out.memorization[0].action == "blocked" and np.all(out.images == 0)


class SwapPrompt:
    """A test mitigation behind the public interface: re-sample with another prompt."""

    name = "swap_prompt"

    def __init__(self, prompt):
        self.prompt = prompt

    def apply(self, plan, context):
        return plan.with_(self.name, prompt=self.prompt)


def test_a_passing_resample_replaces_the_image_and_reports_every_attempt(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(threshold=1e9))
    high, low = "Walking the Amber Road", "a cat"
    # scored from the starting noise image 0 of the guarded call below will have (seed 0)
    score = {p: _call(guarded, p, generator=seeded(1, 0)).memorization[0].score for p in (high, low)}
    assert score[high] != score[low]
    if score[high] < score[low]:
        high, low = low, high
    threshold = (score[high] + score[low]) / 2
    metrics = GuardMetrics(CollectorRegistry())
    config = GuardConfig(threshold=threshold, mitigation=SwapPrompt(low), metrics=metrics)
    out = _call(memguard.guard(shared_base_pipe, config), [high, low], generator=seeded(2))
    first, second = out.memorization
    assert first.action == "resampled" and first.resamples == 1 and first.outcome == "resampled"
    # the decision that caused the re-sample stays on the report (score, verdict); the returned
    # re-sample's own score is returned_score, and the attempt has its own verdict
    assert first.memorized and first.score == pytest.approx(score[high], rel=1e-4) and first.score > threshold
    assert first.returned_score == first.attempts[1].score and first.returned_score <= threshold
    assert first.intent == "unintended" and first.triggers and first.attempts[1].intent == "none"
    assert second.returned_score is None
    assert [a.mitigation for a in first.attempts] == [None, "swap_prompt"] and first.attempts[0].memorized
    assert second.action == "none" and second.resamples == 0
    value = metrics.registry.get_sample_value
    assert value("memguard_images_total", {"pipeline": "default", "outcome": "resampled"}) == 1
    assert value("memguard_images_total", {"pipeline": "default", "outcome": "clean"}) == 1
    # the score histogram observes decision scores, not the re-sample's
    observed = value("memguard_detection_score_sum", {"pipeline": "default"})
    assert observed == pytest.approx(first.score + second.score) != first.returned_score + second.score
    assert value("memguard_mitigations_total", {"pipeline": "default", "mitigation": "swap_prompt"}) == 1
    unguarded = _call(shared_base_pipe, [high, low], generator=seeded(2)).images
    assert np.array_equal(out.images[1], unguarded[1])  # the clean image of the batch is untouched
    # the re-sample is the swapped prompt from image 0's starting noise
    assert np.allclose(out.images[0], _call(shared_base_pipe, low, generator=seeded(1, 0)).images[0], atol=1e-5)


def test_intended_memorization_is_allowed_and_untouched(shared_base_pipe, monkeypatch):
    # The residual (the prompt without its concept) is clean: the concept explains the signal.
    monkeypatch.setattr(GuardedPass, "residual_score", lambda self, image, text: -np.inf)
    config = GuardConfig(threshold=-1.0, registry=REGISTRY)
    out = _call(memguard.guard(shared_base_pipe, config))
    (report,) = out.memorization
    assert report.intent == "intended" and report.action == "allowed" and report.resamples == 0
    assert [(t.text, t.intended) for t in report.triggers] == [("Velmora crest", True)]
    assert np.array_equal(out.images, _call(shared_base_pipe).images)


def test_mixed_prompts_resample_and_spare_the_intended_span(shared_base_pipe, monkeypatch):
    seen = []

    class Spy:
        name = "spy"

        def apply(self, plan, context):
            seen.append(context)
            return plan

    config = GuardConfig(threshold=-1.0, registry=REGISTRY, mitigation=Spy(), policy=Policy(max_attempts=1))
    out = _call(memguard.guard(shared_base_pipe, config))
    (report,) = out.memorization
    assert report.intent == "mixed" and report.reference_score is not None
    (context,) = seen
    assert context.intended_spans == ((PROMPT.index("Velmora"), PROMPT.index("crest") + len("crest")),)
    assert context.intended_tokens and not set(context.intended_tokens) & set(context.unintended_tokens)
    assert not set(context.intended_tokens) & set(context.other_tokens)


# --- the mitigations themselves ---------------------------------------------------------------------
def _context(pipe, prompt=PROMPT):
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True)
    tokens = pipe.tokenizer(prompt, padding="max_length", max_length=cond.shape[1], return_offsets_mapping=True)
    start, end = PROMPT.index("Velmora"), PROMPT.index("crest") + len("crest")
    intended = tuple(k for k, (a, b) in enumerate(tokens["offset_mapping"]) if b > a and a < end and start < b)
    other = tuple(k for k, (a, b) in enumerate(tokens["offset_mapping"]) if b > a and k not in intended)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return MitigationContext(
        pipe=pipe,
        unet=pipe.unet,
        prompt=prompt,
        inputs=ImageInputs.from_text_states(latents, 999.0, cond, uncond),
        latents=latents,
        input_scale=1.0,
        guidance_scale=7.5,
        threshold=0.0,
        noise_target=0.0,
        intended_spans=((start, end),),
        unintended_spans=tuple(tuple(tokens["offset_mapping"][k]) for k in other[-3:]),
        intended_tokens=intended,
        unintended_tokens=other[-3:],
        other_tokens=other,
        attempt=1,
        seed=11,
    )


def test_no_mitigation_touches_the_intended_tokens_or_embeddings(shared_base_pipe):
    context = _context(shared_base_pipe)
    intended = list(context.intended_tokens)
    start = ResamplePlan(latents=context.latents, prompt=PROMPT)
    for scope in ("triggers", "unintended", "all"):
        plan = AttentionRescale(scope=scope).apply(start, context)
        masked = set(plan.edits.attention.masked_tokens)
        assert masked and not masked & set(intended) and 0 not in masked
        plan = PromptEmbeddingOptimization(scope=scope, target=-1.0).apply(start, context)
        assert torch.equal(plan.prompt_embeds[0, intended], context.cond_embeds[0, intended])
        assert not torch.equal(plan.prompt_embeds, context.cond_embeds)  # it did change the others
    plan = RandomTokenAddition(4).apply(start, context)
    assert plan.prompt.startswith(PROMPT) and len(plan.prompt.split()) == len(PROMPT.split()) + 4
    new = shared_base_pipe.encode_prompt(plan.prompt, "cpu", 1, False)[0]
    assert torch.equal(new[0, intended], context.cond_embeds[0, intended])  # causal encoder: spans untouched
    plan = InitialNoiseOptimization(target=-1.0, max_iterations=3).apply(start, context)
    assert plan.prompt == PROMPT and plan.prompt_embeds is None and not torch.equal(plan.latents, context.latents)
    reseeded = ReSeed().apply(start, context)
    assert torch.equal(reseeded.latents, ReSeed().apply(start, context).latents)  # deterministic per seed
    both = Compose((ReSeed(), AttentionRescale())).apply(start, context)
    assert both.applied == ("reseed", "attention_rescale") and both.edits.attention is not None


def test_the_embedding_optimization_stays_finite_in_a_float16_pipeline():
    # Adam's eps rounds to 0 in float16, so positions the optimization may not change (zero gradient)
    # became 0/0 = NaN and took the whole embedding with them; the optimization runs in float32
    pipe = tiny_pipeline(seed=0).to(torch.float16)
    context = _context(pipe)
    start = ResamplePlan(latents=context.latents.half(), prompt=PROMPT)
    plan = PromptEmbeddingOptimization(scope="all", target=-1.0, max_iterations=3).apply(start, context)
    assert plan.prompt_embeds.dtype == torch.float16 and torch.isfinite(plan.prompt_embeds).all()
    assert torch.equal(plan.prompt_embeds[0, 0], context.cond_embeds[0, 0])  # the begin token untouched
    assert not torch.equal(plan.prompt_embeds, context.cond_embeds)


def test_hiding_or_changing_words_also_names_the_text_left_for_a_pooled_embedding(shared_base_pipe):
    context = _context(shared_base_pipe)
    start = ResamplePlan(latents=context.latents, prompt=PROMPT)
    triggers = AttentionRescale(scope="triggers").apply(start, context).pooled_text
    assert triggers == without_spans(PROMPT, list(context.unintended_spans))  # the trigger words gone
    hidden = [PROMPT[a:b] for a, b in context.unintended_spans]
    assert hidden and "Velmora crest" in triggers and not set(hidden) & set(triggers.split())
    for scope in ("unintended", "all"):  # everything outside the intended spans is masked or changed
        assert AttentionRescale(scope=scope).apply(start, context).pooled_text == "Velmora crest"
        peo = PromptEmbeddingOptimization(scope=scope, target=-1.0, max_iterations=1)
        assert peo.apply(start, context).pooled_text == "Velmora crest"
    assert start.pooled_text is None and ReSeed().apply(start, context).pooled_text is None
    embeds_only = replace(context, prompt=None)
    assert AttentionRescale(scope="all").apply(start, embeds_only).pooled_text is None


def test_guidance_schedule_changes_the_effective_scale_only_early():
    eps_uncond, eps_text = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    edit = GuidanceEdit(guidance_scale=7.5, early_scale=-2.0, until_timestep=650)
    early = edit(900.0, (torch.cat([eps_uncond, eps_text]),))[0]
    uncond, text = early.chunk(2)
    assert torch.allclose(uncond + 7.5 * (text - uncond), torch.full_like(text, -2.0))  # what CFG now yields
    late = (torch.cat([eps_uncond, eps_text]),)
    assert edit(500.0, late) is late


@pytest.mark.parametrize("bad", [dict(intended="maybe"), dict(fallback="resample"), dict(max_attempts=-1)])
def test_bad_policies_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Policy(**bad)


def test_a_neutral_attention_edit_recomputes_the_layers_exactly(shared_base_pipe):
    # The mitigation recomputes cross-attention itself; with nothing edited it must match diffusers.
    from memguard.mitigation import Edits
    from memguard.mitigation.edits import AttentionEdit

    reference = _call(shared_base_pipe).images
    guarded = memguard.guard(shared_base_pipe, GuardConfig(threshold=1e9))
    args = dict(prompt=PROMPT, num_inference_steps=STEPS, generator=seeded(1, 5), output_type="np")

    def run(edit):
        arguments = guarded.family.bind(guarded, (), dict(args, generator=seeded(1, 5)))
        arguments.pop("return_dict")
        edits = Edits(attention=edit)
        parent_call = StableDiffusionPipeline.__call__.__get__(guarded)
        pass_ = GuardedPass(guarded, guarded.family, guarded.guard_config, arguments, edits=edits)
        return pass_.run(parent_call).output.images

    assert np.allclose(run(AttentionEdit()), reference, atol=1e-5)
    assert not np.allclose(run(AttentionEdit(begin_scale=1.5, masked_tokens=(2, 3))), reference, atol=1e-5)


def test_the_default_mitigation_picks_by_intent_and_keeps_a_mixed_prompts_concept(shared_base_pipe):
    context = _context(shared_base_pipe)
    start = ResamplePlan(latents=context.latents, prompt=PROMPT)
    mixed = DEFAULT_MITIGATION.apply(start, context)
    end = PROMPT.index("crest") + len("crest")
    assert mixed.applied == ("keep_intended_prefix",) and mixed.prompt == PROMPT[:end]
    new = shared_base_pipe.encode_prompt(mixed.prompt, "cpu", 1, False)[0]
    intended = list(context.intended_tokens)
    assert torch.equal(new[0, intended], context.cond_embeds[0, intended])  # causal encoder: concept untouched
    no_concept = replace(context, intended_spans=(), intended_tokens=())
    unintended = DEFAULT_MITIGATION.apply(start, no_concept)
    assert unintended.applied[0].startswith("dissimilarity") and unintended.prompt == PROMPT  # the words kept
    assert not unintended.rescored
    if unintended.applied == ("dissimilarity",):  # a fresh start pinned to the flagged one: pushed, new noise
        assert isinstance(unintended.edits.guidance, RepulsionEdit)
        assert not torch.equal(unintended.latents, context.latents)
    else:  # not pinned: the nudged prompt
        assert unintended.applied[1:] == ("guidance_schedule", "prompt_embedding_opt")
    # without a generation to push from (a pipeline that starts from an image), the prompt is nudged
    nudged = DEFAULT_MITIGATION.apply(start, replace(no_concept, latents=None))
    assert nudged.applied == (
        "dissimilarity(no anchor: this pipeline starts from an image: the fallback instead)",
        "guidance_schedule",
        "prompt_embedding_opt",
    )
    assert nudged.edits.guidance.early_scale < 0 and nudged.prompt == PROMPT and not nudged.rescored
    assert not torch.equal(nudged.prompt_embeds, context.cond_embeds)  # the prompt's own embeddings, moved
    assert KeepIntendedPrefix().apply(start, replace(context, intended_spans=())).prompt == PROMPT
    with pytest.raises(TypeError, match="ByIntent.mixed"):
        ByIntent(unintended=ReSeed(), mixed="keep")


class Named:
    """A test mitigation that only records that it ran."""

    def __init__(self, name):
        self.name = name

    def apply(self, plan, context):
        return plan.with_(self.name)


def test_escalate_applies_one_mitigation_per_attempt_and_the_last_one_after(shared_base_pipe):
    context = _context(shared_base_pipe)
    start = ResamplePlan(latents=context.latents, prompt=PROMPT)
    escalate = Escalate((Named("keep"), Named("remove")))
    picked = [escalate.apply(start, replace(context, attempt=k)).applied for k in (1, 2, 3, 7)]
    assert picked == [("keep",), ("remove",), ("remove",), ("remove",)]
    assert escalate.name == "escalate(keep, remove)"
    with pytest.raises(ValueError, match="Escalate needs at least one"):
        Escalate(())
    with pytest.raises(TypeError, match=r"Escalate.mitigations\[1\]"):
        Escalate((Named("keep"), "remove"))


def test_compose_checks_its_parts_when_built_not_at_the_first_re_sample():
    composed = Compose([Named("a"), Named("b")])  # a list is kept as a tuple: the config stays hashable
    assert isinstance(composed.mitigations, tuple) and composed.name == "a+b"
    with pytest.raises(ValueError, match="Compose needs at least one"):
        Compose(())
    with pytest.raises(TypeError, match=r"Compose.mitigations\[0\] must be a mitigation.*str"):
        Compose(("reseed", Named("b")))


def test_a_retry_escalates_to_the_next_mitigation(shared_base_pipe):
    # every attempt scores memorized (threshold -1), so the guard retries with the next mitigation
    mitigation = Escalate((RESEED_AND_MASK, Compose((ReSeed(), RandomTokenAddition(2)))))
    config = GuardConfig(threshold=-1.0, policy=Policy(max_attempts=3, fallback="flag"), mitigation=mitigation)
    (report,) = _call(memguard.guard(shared_base_pipe, config), "Walking the Amber Road").memorization
    later = ["reseed+random_tokens"] * 2
    assert [a.mitigation for a in report.attempts] == [None, "reseed+attention_rescale", *later]
    alone = GuardConfig(threshold=-1.0, policy=Policy(max_attempts=1, fallback="flag"), mitigation=RESEED_AND_MASK)
    first = _call(memguard.guard(shared_base_pipe, alone), "Walking the Amber Road").memorization[0]
    assert first.attempts[1].score == report.attempts[1].score  # attempt 1 is the first mitigation's


def test_keep_intended_prefix_keeps_the_concepts_alone_when_trigger_words_come_before_them(shared_base_pipe):
    context = _context(shared_base_pipe)  # the concept "Velmora crest", trigger words after it
    plan = ResamplePlan(latents=context.latents, prompt=PROMPT)
    cut = KeepIntendedPrefix().apply(plan, context)
    assert cut.prompt == PROMPT[: PROMPT.index("crest") + len("crest")]  # the words after it are gone
    # a trigger word before the concept ("portrait") survives any cut: the concept is kept alone
    early = replace(context, unintended_spans=((PROMPT.index("portrait"), PROMPT.index("portrait") + 8),))
    alone = KeepIntendedPrefix().apply(plan, early)
    assert alone.prompt == "Velmora crest" and alone.prompt_embeds is None


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: AttentionRescale(scope="trigger"), "AttentionRescale.scope"),
        (lambda: AttentionRescale(begin_scale="1"), "AttentionRescale.begin_scale"),
        (lambda: PromptEmbeddingOptimization(scope="everything"), "PromptEmbeddingOptimization.scope"),
        (lambda: PromptEmbeddingOptimization(lr=-1.0), "PromptEmbeddingOptimization.lr"),
        (lambda: InitialNoiseOptimization(max_iterations=-1), "InitialNoiseOptimization.max_iterations"),
        (lambda: GuidanceSchedule(early_scale="x"), "GuidanceSchedule.early_scale"),
        (lambda: GuidanceSchedule(early_scale=float("nan")), "GuidanceSchedule.early_scale"),
        (lambda: RandomTokenAddition(n_tokens=2.5), "RandomTokenAddition.n_tokens"),
        (lambda: GuardConfig(mitigation=ReSeed), "GuardConfig.mitigation must be a mitigation object"),
    ],
)
def test_a_mistyped_mitigation_setting_is_refused_when_built_naming_it(build, field):
    # at the first re-sample it would block the image and keep only the error's type
    with pytest.raises((TypeError, ValueError), match=re.escape(field)):
        build()


def test_compose_and_escalate_keep_mitigations_given_as_a_generator():
    assert Escalate(m for m in [ReSeed(), RandomTokenAddition()]).mitigations == (ReSeed(), RandomTokenAddition())
    assert Compose(m for m in [ReSeed()]).mitigations == (ReSeed(),)
