"""Every guarded pipeline family, on tiny random-weight pipelines: the parent's contract holds (its
signature, its outputs, its validation, bit-identical images where the guard does not act), the
signals cost no extra UNet call, the guard decides at step k, blocks, re-samples, cleans up its
taps, and `from_pipe` never silently drops the guard."""

import inspect
import math

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
)
from helpers import UNetCallCounter

import memguard
from memguard import GuardConfig, IntendedConcept, IntentRegistry, Policy
from memguard.mitigation import ReSeed
from memguard.pipelines import GUARDED_CLASSES, guarded_class_for
from memguard.signals import is_installed
from memguard.testbed.tiny import TINY_FAMILIES, tiny_controlnet, tiny_family_pipeline

FAMILIES = list(TINY_FAMILIES)
PROMPTS = ["a red circle at the top left", "a blue square on a green background"]
STEPS = 4
STRENGTH = 0.75  # img2img and inpaint run int(4 * 0.75) = 3 of the 4 steps
_IMAGE = PIL.Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8"))
_MASK = PIL.Image.fromarray(np.where(np.arange(32)[:, None] < 16, 255, 0).repeat(32, 1).astype("uint8"))


@pytest.fixture(scope="module")
def pipes():
    """One tiny plain pipeline per family (tests must not change them)."""
    return {name: tiny_family_pipeline(name) for name in FAMILIES}


def family_inputs(name: str) -> dict:
    """The family's own call arguments besides the prompt."""
    if "controlnet-" in name:  # an init image (and mask) besides the ControlNet's control_image
        plain = name.replace("controlnet-", "")
        return {**family_inputs(plain), "control_image": _IMAGE, "height": 32, "width": 32}
    if "inpaint" in name:
        return dict(image=_IMAGE, mask_image=_MASK, strength=STRENGTH, height=32, width=32)
    if "img2img" in name:
        return dict(image=_IMAGE, strength=STRENGTH)
    if "controlnet" in name:
        return dict(image=_IMAGE, height=32, width=32)
    return dict(height=32, width=32)


def steps_run(name: str) -> int:
    return int(STEPS * STRENGTH) if ("img2img" in name or "inpaint" in name) else STEPS


def call(pipe, name, prompts=PROMPTS, seed=0, **kwargs):
    n = len(prompts) * kwargs.get("num_images_per_prompt", 1)
    kwargs.setdefault("generator", [torch.Generator().manual_seed(seed + i) for i in range(n)])
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "np")
    return pipe(prompts, **{**family_inputs(name), **kwargs})


def same(a, b) -> bool:
    if isinstance(a, list):
        return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return np.array_equal(a, b)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_guarded_class_exposes_the_parents_signature_and_guard_picks_it(pipes, name):
    pipe = pipes[name]
    guarded = memguard.guard(pipe)
    assert type(guarded) is guarded_class_for(type(pipe)) and isinstance(guarded, type(pipe))
    parent = inspect.signature(type(pipe).__call__).parameters
    assert inspect.signature(type(guarded).__call__).parameters == parent
    assert list(inspect.signature(guarded.__call__).parameters) == [p for p in parent if p != "self"]
    for module in ("unet", "vae", "text_encoder"):
        assert getattr(guarded, module) is getattr(pipe, module)


@pytest.mark.parametrize("name", FAMILIES)
def test_flag_mode_is_bit_identical_costs_no_extra_unet_call_and_cleans_up(pipes, name):
    pipe = pipes[name]
    reference = call(pipe, name).images
    guarded = memguard.guard(pipe, GuardConfig(policy=Policy.uniform("flag"), threshold=-1.0))
    counter = UNetCallCounter(pipe.unet)
    out = call(guarded, name)
    counter.remove()
    assert counter.calls == steps_run(name)  # the signals come from the CFG batch the pipeline runs anyway
    assert same(reference, out.images)
    assert [r.action for r in out.memorization] == ["flagged", "flagged"]
    assert all(r.status == "checked" and np.isfinite(r.score) for r in out.memorization)
    assert not is_installed(pipe.unet)


@pytest.mark.parametrize(
    "name, output_type",
    # np on every family above; pil on every family too, pt and latent on one SD and one SDXL family
    [(name, "pil") for name in FAMILIES]
    + [(name, kind) for name in ("stable-diffusion", "stable-diffusion-xl-inpaint") for kind in ("pt", "latent")],
)
def test_flag_mode_is_bit_identical_for_every_output_type(pipes, name, output_type):
    pipe = pipes[name]
    reference = call(pipe, name, output_type=output_type).images
    guarded = memguard.guard(pipe, GuardConfig(policy=Policy.uniform("flag"), threshold=-1.0))
    assert same(reference, call(guarded, name, output_type=output_type).images)


@pytest.mark.parametrize("name", FAMILIES)
def test_block_decides_at_step_k_and_stops_the_loop(pipes, name):
    pipe = pipes[name]
    guarded = memguard.guard(pipe, GuardConfig(policy=Policy.uniform("block"), threshold=-1.0, decision_step=2))
    counter = UNetCallCounter(pipe.unet)
    out = call(guarded, name)
    counter.remove()
    assert counter.calls == 2  # every image blocked at step 2: the remaining steps are skipped
    assert [r.action for r in out.memorization] == ["blocked", "blocked"]
    assert [r.decided_at_step for r in out.memorization] == [2, 2]
    assert not np.asarray(out.images).any()  # black placeholders


@pytest.mark.parametrize("name", FAMILIES)
def test_resample_with_the_default_mitigation(pipes, name):
    pipe = pipes[name]
    first = call(pipe, name).images
    guarded = memguard.guard(pipe, GuardConfig(threshold=-1.0, policy=Policy(max_attempts=1)))
    out = call(guarded, name)
    again = call(guarded, name)
    # the prompt-keeping push where a fresh start is pinned to the flagged one, else the prompt nudged;
    # a family that starts from an image has nothing to push from
    nudged = "+guidance_schedule+prompt_embedding_opt"
    from_image = "img2img" in name or "inpaint" in name
    expected = (
        {f"dissimilarity(no anchor: this pipeline starts from an image: the fallback instead){nudged}"}
        if from_image
        else {"dissimilarity", f"dissimilarity(unpinned: the fallback instead){nudged}"}
    )
    for i, report in enumerate(out.memorization):
        assert report.action == "resampled" and report.resamples == 1
        assert report.attempts[1].mitigation in expected
        assert not np.array_equal(out.images[i], first[i])  # the returned image is the re-sample
    assert same(out.images, again.images)  # re-samples are reproducible: they never use the global RNG
    assert not is_installed(pipe.unet)


@pytest.mark.parametrize("name", [n for n in FAMILIES if "img2img" in n or "inpaint" in n])
@pytest.mark.parametrize("inputs", [2, 4])  # one init image per prompt, one per image
def test_a_resample_starts_from_the_init_image_the_parent_paired_with_that_image(pipes, name, inputs, monkeypatch):
    # diffusers tiles k init images over the batch: image i of the 2 prompts x 2 starts from image i mod k
    shades = [PIL.Image.new("RGB", (32, 32), (v, v, v)) for v in (0, 255, 80, 160)[:inputs]]
    # the cheapest mitigation: which image a re-sample starts from does not depend on it
    config = GuardConfig(threshold=-1.0, policy=Policy(max_attempts=1), mitigation=ReSeed())
    guarded = memguard.guard(pipes[name], config)
    seen = []
    preprocess = guarded.image_processor.preprocess

    def spy(image, *args, **kwargs):
        seen.append([np.asarray(im)[0, 0, 0] for im in image] if isinstance(image, list) else image)
        return preprocess(image, *args, **kwargs)

    monkeypatch.setattr(guarded.image_processor, "preprocess", spy)
    out = call(guarded, name, image=shades, num_images_per_prompt=2)
    assert [(r.resamples, r.status) for r in out.memorization] == [(1, "checked")] * 4  # each re-sampled once
    shade = [np.asarray(im)[0, 0, 0] for im in shades]
    assert seen == [shade] + [[shade[i % inputs]] for i in range(4)]  # the call's, then each re-sample's


@pytest.mark.parametrize("name", FAMILIES)
def test_guidance_off_with_the_unconditional_pass_resamples_on_every_family(pipes, name):
    # the extra pass's unconditional branch is what the mitigations compare with when guidance is off
    config = GuardConfig(threshold=-1.0, unconditional_pass=True, policy=Policy(max_attempts=1))
    out = call(memguard.guard(pipes[name], config), name, guidance_scale=1.0)
    assert [(r.action, r.status) for r in out.memorization] == [("resampled", "checked")] * 2
    assert np.isfinite(out.images).all() and np.asarray(out.images).any()


@pytest.mark.parametrize("name", ["stable-diffusion", "stable-diffusion-img2img"])
def test_numpy_numbers_are_accepted_where_the_parent_accepts_them(pipes, name):
    numbers = {"num_inference_steps": np.int64(STEPS)}
    if "img2img" in name:
        numbers["strength"] = np.float32(STRENGTH)
    parent = call(pipes[name], name, **numbers).images
    guarded = call(memguard.guard(pipes[name], GuardConfig(policy=Policy.uniform("flag"))), name, **numbers)
    assert same(guarded.images, parent) and len(guarded.memorization) == 2


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("pinned_similarity", [-1.0, 1.0])
def test_the_prompt_keeping_resample_checks_the_fresh_start_on_every_family(pipes, name, pinned_similarity):
    # -1: every fresh start counts as pinned (pushed); 1: none does (the fallback); a family that
    # starts from an image has no anchor to push from and takes the fallback either way
    fallback = memguard.mitigation.PROMPT_MASKING
    mitigation = memguard.mitigation.Dissimilarity(unpinned=fallback, pinned_similarity=pinned_similarity)
    pipe = pipes[name]
    first = call(pipe, name).images
    config = GuardConfig(threshold=-1.0, mitigation=mitigation, policy=Policy(max_attempts=1, fallback="flag"))
    out = call(memguard.guard(pipe, config), name)
    from_image = "img2img" in name or "inpaint" in name
    why = "no anchor: this pipeline starts from an image" if from_image else "unpinned"
    expected = (
        "dissimilarity"
        if pinned_similarity < 0 and not from_image
        else f"dissimilarity({why}: the fallback instead)+guidance_schedule+attention_rescale"
    )
    for i, report in enumerate(out.memorization):
        assert report.action == "resampled" and report.attempts[1].mitigation == expected
        assert np.isfinite(out.images[i]).all() and not np.array_equal(out.images[i], first[i])
    assert not is_installed(pipe.unet)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_trajectory_score_rolls_the_rest_of_the_prompt_out_on_every_family(pipes, name):
    # the latent-update score of the prompt without its allowed concept needs the loop's own steps: the
    # guard steps a copy of the family's scheduler from its start (img2img's part-way start included)
    pipe, draws, k = pipes[name], 2, 2
    config = GuardConfig(
        detector="broken_memories",
        threshold=-1.0,
        decision_step=k,
        registry=IntentRegistry((IntendedConcept("red circle"),)),
        policy=Policy.uniform("flag"),
        residual_draws=draws,
    )
    counter = UNetCallCounter(pipe.unet)
    out = call(memguard.guard(pipe, config), name, prompts=PROMPTS[:1])
    counter.remove()
    (report,) = out.memorization
    assert report.intent == "mixed" and math.isfinite(report.residual_score)  # every score passes -1
    assert math.isfinite(report.reference_score)  # the concept alone, rolled out the same way
    # at the decision (step k): k guided calls of `draws` noises for the rest and k for the concept
    loop = steps_run(name)
    assert counter.batches == [2] * k + [2 * draws] * (2 * k) + [2] * (loop - k)


@pytest.mark.parametrize("name", [n for n in FAMILIES if "xl" in n])
def test_words_hidden_from_cross_attention_are_hidden_from_the_pooled_embedding_too(pipes, name):
    # SDXL also conditions on the second encoder's pooled embedding of the whole prompt; a re-sample
    # that masks every word would still be told the prompt through it (the SDXL testbed's re-samples
    # copied training images that way).
    pipe = pipes[name]
    registry = memguard.IntentRegistry((memguard.IntendedConcept("red circle"),))
    mitigation = memguard.mitigation.AttentionRescale(scope="all")
    config = GuardConfig(threshold=-1.0, registry=registry, mitigation=mitigation, policy=Policy(max_attempts=1))
    pooled = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: pooled.append(kwargs["added_cond_kwargs"]["text_embeds"][-1].clone()),
        with_kwargs=True,
    )
    try:
        out = call(memguard.guard(pipe, config), name, prompts=[PROMPTS[0]])
    finally:
        hook.remove()
    assert out.memorization[0].intent == "mixed" and out.memorization[0].resamples == 1

    def pooled_of(text):
        return pipe.encode_prompt(text, device="cpu", do_classifier_free_guidance=False)[2][0]

    assert torch.equal(pooled[0], pooled_of(PROMPTS[0]))  # the caller's own generation
    assert torch.allclose(pooled[-1], pooled_of("red circle"))  # the re-sample: the concept alone
    assert not torch.allclose(pooled[-1], pooled_of(PROMPTS[0]))


@pytest.mark.parametrize("name", FAMILIES)
def test_return_dict_false_is_the_parents_tuple(pipes, name):
    pipe = pipes[name]
    parent = call(pipe, name, return_dict=False)
    guarded = memguard.guard(pipe)
    result = call(guarded, name, return_dict=False)
    assert type(result) is tuple and len(result) == len(parent)
    assert same(parent[0], result[0])
    assert len(guarded.last_memorization) == 2


@pytest.mark.parametrize("name", FAMILIES)
def test_the_parents_validation_still_runs(pipes, name):
    guarded = memguard.guard(pipes[name])
    with pytest.raises(ValueError, match="generators"):
        call(guarded, name, generator=[torch.Generator().manual_seed(0)] * 3)  # 2 images, 3 generators


@pytest.mark.parametrize("name", FAMILIES)
def test_taps_are_removed_when_the_call_raises(pipes, name):
    pipe = pipes[name]

    def broken(pipe, step, timestep, kwargs):
        raise KeyError("the caller's callback failed")

    with pytest.raises(KeyError, match="callback failed"):
        call(memguard.guard(pipe), name, callback_on_step_end=broken)
    assert not is_installed(pipe.unet)


@pytest.mark.parametrize("name", ["stable-diffusion", "stable-diffusion-img2img", "stable-diffusion-xl"])
def test_a_stochastic_scheduler_under_the_default_policy_keeps_images_and_the_generator(pipes, name):
    plain = type(pipes[name]).from_pipe(pipes[name])
    plain.scheduler = EulerAncestralDiscreteScheduler.from_config(plain.scheduler.config)
    plain.set_progress_bar_config(disable=True)
    guarded = memguard.guard(plain, GuardConfig(threshold=1e9))  # default policy: resample; nothing acts

    def run(pipe):
        generator = torch.Generator().manual_seed(7)
        images = call(pipe, name, generator=generator).images
        return images, generator.get_state()

    reference, state = run(plain)
    first, first_state = run(guarded)
    second, _ = run(guarded)
    assert same(reference, first) and same(first, second)
    assert torch.equal(state, first_state)  # the caller's generator advanced exactly as the parent's


@pytest.mark.parametrize(
    "source, target, expected",
    [
        ("stable-diffusion", StableDiffusionImg2ImgPipeline, "stable-diffusion-img2img"),
        ("stable-diffusion-img2img", StableDiffusionInpaintPipeline, "stable-diffusion-inpaint"),
        ("stable-diffusion-img2img", StableDiffusionPipeline, "stable-diffusion"),
        ("stable-diffusion-xl", StableDiffusionXLImg2ImgPipeline, "stable-diffusion-xl-img2img"),
        ("stable-diffusion", AutoPipelineForImage2Image, "stable-diffusion-img2img"),
        ("stable-diffusion", AutoPipelineForInpainting, "stable-diffusion-inpaint"),
        ("stable-diffusion-xl-img2img", AutoPipelineForText2Image, "stable-diffusion-xl"),
        ("stable-diffusion-xl", AutoPipelineForInpainting, "stable-diffusion-xl-inpaint"),
        ("stable-diffusion-controlnet", AutoPipelineForImage2Image, "stable-diffusion-controlnet-img2img"),
        ("stable-diffusion-controlnet", AutoPipelineForInpainting, "stable-diffusion-controlnet-inpaint"),
        ("stable-diffusion-xl-controlnet", AutoPipelineForImage2Image, "stable-diffusion-xl-controlnet-img2img"),
        ("stable-diffusion-xl-controlnet", AutoPipelineForInpainting, "stable-diffusion-xl-controlnet-inpaint"),
    ],
)
def test_from_pipe_keeps_the_guard_and_its_config(pipes, source, target, expected):
    config = GuardConfig(policy=Policy.uniform("block"), name="from-pipe")
    guarded = memguard.guard(pipes[source], config)
    derived = target.from_pipe(guarded)
    assert derived.family.name == expected and derived.guard_config is config
    assert derived.unet is guarded.unet
    # round trip back to the source family
    back = type(pipes[source]).from_pipe(derived)
    assert back.family.name == source and back.guard_config is config


def test_auto_pipeline_with_a_controlnet_keeps_the_guard(pipes):
    guarded = memguard.guard(pipes["stable-diffusion"])
    derived = AutoPipelineForText2Image.from_pipe(guarded, controlnet=tiny_controlnet())
    assert derived.family.name == "stable-diffusion-controlnet"
    out = call(derived, "stable-diffusion-controlnet")
    assert len(out.memorization) == 2


def test_from_pipe_to_a_family_memguard_does_not_guard_is_refused(pipes):
    from diffusers import StableDiffusionPAGPipeline

    guarded = memguard.guard(pipes["stable-diffusion"])
    with pytest.raises(TypeError, match="would drop its memorization guard.*StableDiffusionPAGPipeline"):
        StableDiffusionPAGPipeline.from_pipe(guarded)
    # from an unguarded pipeline diffusers' own from_pipe runs unchanged
    assert type(StableDiffusionPAGPipeline.from_pipe(pipes["stable-diffusion"])) is StableDiffusionPAGPipeline


def test_wrapping_keeps_every_modules_dtype():
    pipe = tiny_family_pipeline("stable-diffusion-xl")
    pipe.unet.to(torch.float16)  # a mixed-precision pipeline: fp16 UNet, fp32 VAE and text encoders
    guarded = memguard.guard(pipe)
    img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(guarded)
    for p in (pipe, guarded, img2img):
        assert p.unet.dtype == torch.float16 and p.vae.dtype == torch.float32


def test_guarded_classes_are_public_and_complete():
    names = {cls.__name__ for cls in GUARDED_CLASSES}
    assert names == {f"Guarded{cls.__name__}" for cls, _ in TINY_FAMILIES.values()}
    assert all(getattr(memguard, name) is cls for name, cls in ((c.__name__, c) for c in GUARDED_CLASSES))


def test_a_subclass_of_a_supported_pipeline_keeps_its_own_overrides(pipes):
    calls = []

    class MyPipeline(StableDiffusionPipeline):
        def __call__(self, *args, **kwargs):
            calls.append(kwargs.get("num_inference_steps"))
            return super().__call__(*args, **kwargs)

    mine = MyPipeline(**pipes["stable-diffusion"].components)
    mine.set_progress_bar_config(disable=True)
    guarded = memguard.guard(mine)
    assert isinstance(guarded, MyPipeline)
    out = call(guarded, "stable-diffusion")
    assert calls == [STEPS] and len(out.memorization) == 2


@pytest.mark.parametrize("name", ["stable-diffusion", "stable-diffusion-xl-controlnet"])
def test_a_saved_guarded_pipeline_loads_with_diffusers_own_loaders(pipes, name, tmp_path):
    from diffusers import DiffusionPipeline

    guarded = memguard.guard(pipes[name])
    guarded.save_pretrained(tmp_path)
    parent = type(pipes[name])
    loaded = DiffusionPipeline.from_pretrained(tmp_path)  # the guard is not saved: the parent comes back
    assert type(loaded) is parent
    assert type(memguard.guard(loaded)) is type(guarded)


def test_model_cpu_offload_set_on_the_parent_is_rearmed_after_each_guarded_call(pipes):
    pipe = tiny_family_pipeline("stable-diffusion")
    pipe.enable_model_cpu_offload(device="cpu")
    guarded = memguard.guard(pipe, GuardConfig(threshold=-1.0, policy=Policy.uniform("flag")))
    rearmed = []
    original = type(guarded).enable_model_cpu_offload

    def spy(self, *args, **kwargs):
        rearmed.append(kwargs.get("device"))
        return original(self, *args, **kwargs)

    type(guarded).enable_model_cpu_offload = spy
    try:
        out = call(guarded, "stable-diffusion")
    finally:
        type(guarded).enable_model_cpu_offload = original
    # diffusers' maybe_free_model_hooks at the end of the call, as on the parent
    assert len(rearmed) == 1 and torch.device(rearmed[0]).type == "cpu"
    assert same(out.images, call(pipe, "stable-diffusion").images)


def test_clip_skip_reaches_the_guards_own_prompt_encodings(pipes, monkeypatch):
    # the prompt without its concept (the intent check) is encoded as the call encodes its prompt
    pipe = pipes["stable-diffusion-xl"]
    registry = IntentRegistry([IntendedConcept("moon", ("the moon",))])
    guarded = memguard.guard(pipe, GuardConfig(threshold=-1.0, registry=registry, policy=Policy.uniform("flag")))
    seen = []
    original = type(pipe).encode_prompt

    def spy(self, *args, **kwargs):
        seen.append((kwargs.get("prompt"), kwargs.get("clip_skip")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(guarded), "encode_prompt", spy)
    call(guarded, "stable-diffusion-xl", prompts=["the moon over a red square"], clip_skip=1)
    guard_encodings = [skip for prompt, skip in seen if isinstance(prompt, str) and "moon over" not in prompt]
    assert guard_encodings and set(guard_encodings) == {1}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_opt_in_attention_spread_reads_its_per_query_entropy_on_every_family(pipes, name):
    from memguard.detection import AttentionSpreadDetector
    from memguard.detection.spread import ENTROPY_PREFIX, QUERY_ENTROPY_PREFIX
    from memguard.signals import cross_attention_layers

    pipe = pipes[name]
    layers = sorted(cross_attention_layers(pipe.unet))
    stats = tuple((prefix + layer, 0.5, 0.1) for prefix in (ENTROPY_PREFIX, QUERY_ENTROPY_PREFIX) for layer in layers)
    detector = AttentionSpreadDetector(layer_stats=tuple(sorted(stats)), top_layers=3)
    guarded = memguard.guard(pipe, GuardConfig(detector=detector, threshold=1e6, policy=Policy.uniform("flag")))
    out = call(guarded, name)
    assert [r.detector for r in out.memorization] == ["attention_spread"] * len(PROMPTS)
    assert all(r.status == "checked" and math.isfinite(r.score) for r in out.memorization)
    assert same(out.images, call(pipe, name).images)  # flag mode: the parent's images
