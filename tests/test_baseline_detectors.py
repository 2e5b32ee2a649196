"""The 2026 baselines: Asthana & Belagiannis's anisotropy and Huang et al.'s latent update norm
("Broken Memories"). Each equals a direct computation, costs the UNet calls its docstring says, works
on every family with the parent's images where it does not act, leaves the user's step callback as it
was, and can be calibrated."""

import copy
import math

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import PROMPTS, UNetCallCounter, initial_latents, run_tiny, seeded

import memguard
from memguard import GuardConfig, IntendedConcept, IntentRegistry, Policy
from memguard.calibration import Calibration
from memguard.detection import AnisotropyDetector, LatentUpdateDetector, record_trace
from memguard.intent.resolver import with_stand_ins
from memguard.signals import SignalNeeds, SignalTrace
from memguard.testbed.tiny import TINY_FAMILIES, tiny_family_pipeline

STEPS = 4
DETECTORS = ["anisotropy", "broken_memories"]
EXTRA_CALLS = {"anisotropy": 1, "broken_memories": 0}  # the guard's own UNet calls per pass


def _run(pipe, prompts=PROMPTS, **kwargs):
    return run_tiny(pipe, prompts, STEPS, **kwargs)


_initial_latents = initial_latents


def _scores(out) -> list[float]:
    return [r.score for r in out.memorization]


def _rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    flat = (b.float() - a.float()).flatten(1)
    return flat.norm(dim=1) / math.sqrt(flat.shape[1])


# --- the scores are the papers' quantities ---------------------------------------------------------
def test_anisotropy_equals_a_direct_computation(shared_base_pipe):
    pipe = shared_base_pipe
    latents = _initial_latents(pipe, 2)
    out = _run(memguard.guard(pipe, GuardConfig(detector="anisotropy", threshold=1e9)), latents=latents.clone())
    cosine_only = AnisotropyDetector(name="cosine_only", norm_weight=0.0, cosine_weight=1.0)
    alone = _run(memguard.guard(pipe, GuardConfig(detector=cosine_only, threshold=1e9)), latents=latents.clone())
    # Direct: the first step's input x_T, at the first timestep (the norm) and at the schedule's
    # third-to-last one (the alignment), with the prompt and with the empty prompt.
    cond, uncond = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    pipe.scheduler.set_timesteps(STEPS)
    t, low = pipe.scheduler.timesteps[0], pipe.scheduler.timesteps[-3]
    assert low < t
    x = pipe.scheduler.scale_model_input(latents * pipe.scheduler.init_noise_sigma, t)
    with torch.no_grad():
        norm = (pipe.unet(x, t, cond).sample - pipe.unet(x, t, uncond).sample).flatten(1).norm(dim=1)
        e_u = pipe.unet(x, low, uncond).sample
        guidance = pipe.unet(x, low, cond).sample - e_u
    cosine = ((e_u * guidance).sum(dim=1) / (e_u.norm(dim=1) * guidance.norm(dim=1))).mean(dim=(1, 2))
    assert _scores(alone) == pytest.approx(cosine.tolist(), rel=1e-4, abs=1e-5)
    assert _scores(out) == pytest.approx((norm + 2.0 * cosine).tolist(), rel=1e-4)  # SD 1.4's weights
    assert AnisotropyDetector().score_range == (-2.0, math.inf)
    assert cosine_only.score_range == (-1.0, 1.0)


def test_broken_memories_equals_a_direct_computation(shared_base_pipe):
    pipe = shared_base_pipe
    latents = _initial_latents(pipe, 2)
    seen = []

    def keep(p, step, timestep, kwargs):
        seen.append(kwargs["latents"].clone())
        return kwargs

    _run(pipe, latents=latents.clone(), callback_on_step_end=keep)  # the parent's own loop
    path = [latents * pipe.scheduler.init_noise_sigma, *seen]
    updates = torch.stack([_rms(a, b) for a, b in zip(path, path[1:], strict=False)])  # (steps, images)
    for k in (1, 2, 3):
        config = GuardConfig(detector="broken_memories", threshold=1e9, decision_step=k)
        out = _run(memguard.guard(pipe, config), latents=latents.clone())
        assert _scores(out) == pytest.approx(updates[:k].mean(dim=0).tolist(), rel=1e-5), k
    # the benchmarks' recorder reads the same updates
    trace = record_trace(
        pipe, PROMPTS, LatentUpdateDetector().needs, upto_step=3, num_inference_steps=STEPS, latents=latents.clone()
    )
    assert LatentUpdateDetector().score(trace, 3).tolist() == pytest.approx(updates[:3].mean(dim=0).tolist(), rel=1e-5)
    assert sorted(trace.steps) == [0, 1, 2]  # nothing after the decision step


def test_broken_memories_never_averages_a_partial_trajectory():
    trace = SignalTrace(num_images=2)
    for step in (1, 2):  # the first update (from x_T) is missing
        trace.record_latent_update(step, torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2))
    assert torch.isnan(LatentUpdateDetector().score(trace, 3)).all()
    trace.record_latent_update(0, torch.zeros(2, 4, 2, 2), 3 * torch.ones(2, 4, 2, 2))
    assert LatentUpdateDetector().score(trace, 3).tolist() == pytest.approx([5 / 3, 5 / 3])
    assert LatentUpdateDetector().score(trace, 1).tolist() == pytest.approx([3.0, 3.0])


# --- intent ----------------------------------------------------------------------------------------
def test_the_intent_check_scores_the_residual_or_says_it_cannot(shared_base_pipe):
    registry = IntentRegistry((IntendedConcept("Velmora crest", ("the Velmora emblem",)),))
    prompt = "a portrait of the Velmora crest on the Kettle Hill Gazette cover"
    flag = Policy.uniform("flag")
    reports = {}
    for detector in DETECTORS:
        config = GuardConfig(detector=detector, threshold=-1e6, registry=registry, policy=flag)
        (reports[detector],) = memguard.guard(shared_base_pipe, config)(
            prompt, num_inference_steps=STEPS, generator=seeded(1), output_type="latent"
        ).memorization
    # anisotropy: the prompt without the concept is scored on fresh noise, the extra call included
    assert math.isfinite(reports["anisotropy"].residual_score) and reports["anisotropy"].intent == "mixed"
    # Broken Memories: the rest is rolled out through the decision step, so it gets a score of its own
    assert math.isfinite(reports["broken_memories"].residual_score)


@pytest.mark.parametrize("decision_step", [1, 3])
def test_a_trajectory_residual_is_the_parent_loop_on_the_rest_of_the_prompt(shared_base_pipe, decision_step):
    """The latent-update score of the prompt without its concept equals the parent pipeline's own loop
    run on that text from the roll-out's starting noises, averaged over the draws."""
    pipe = shared_base_pipe
    registry = IntentRegistry((IntendedConcept("Velmora crest", ("the Velmora emblem",)),))
    prompt = "a portrait of the Velmora crest on the Kettle Hill Gazette cover"
    draws, start = 2, _initial_latents(pipe, 1, seed=5)
    config = GuardConfig(
        detector="broken_memories",
        threshold=-1.0,
        decision_step=decision_step,
        registry=registry,
        policy=Policy.uniform("flag"),
        residual_draws=draws,
    )
    (report,) = _run(memguard.guard(pipe, config), [prompt], latents=start.clone()).memorization
    rest = with_stand_ins(prompt, [(prompt.index("Velmora crest"), prompt.index(" on the Kettle"), "")])
    # the roll-out's starting noises: `draws` seeded normals at the scale of the loop's own start
    noise = torch.randn((draws, *start.shape[1:]), generator=torch.Generator("cpu").manual_seed(0))
    x_t = noise * (start * pipe.scheduler.init_noise_sigma).float().std()
    seen = []

    def keep(p, step, timestep, kwargs):
        seen.append(kwargs["latents"].clone())
        return kwargs

    _run(pipe, [rest] * draws, latents=x_t / pipe.scheduler.init_noise_sigma, callback_on_step_end=keep)
    path = [x_t, *seen[:decision_step]]
    updates = torch.stack([_rms(a, b) for a, b in zip(path, path[1:], strict=False)])  # (steps, draws)
    assert report.residual_score == pytest.approx(float(updates.mean()), rel=1e-4)
    assert report.intent == ("intended" if report.residual_score <= report.threshold else "mixed")


def test_without_a_concept_to_clear_no_scheduler_is_copied(shared_base_pipe, monkeypatch):
    copies = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda value, *a: copies.append(type(value).__name__) or real(value, *a))
    _run(memguard.guard(shared_base_pipe, GuardConfig(detector="broken_memories", threshold=1e9)))
    assert type(shared_base_pipe.scheduler).__name__ not in copies


# --- what they cost -----------------------------------------------------------------------------------
@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("decision_step", [1, 3])
def test_each_costs_the_documented_unet_calls(shared_base_pipe, detector, decision_step):
    counter = UNetCallCounter(shared_base_pipe.unet)
    out = _run(
        memguard.guard(shared_base_pipe, GuardConfig(detector=detector, threshold=1e9, decision_step=decision_step))
    )
    counter.remove()
    assert counter.calls == STEPS + EXTRA_CALLS[detector]  # anisotropy: one, at the first step only
    assert counter.batches == [4] * counter.calls  # the extra call is a CFG batch of the 2 images
    assert all(r.status == "checked" and math.isfinite(r.score) for r in out.memorization)


def test_anisotropy_with_guidance_off_pays_two_calls_and_gives_the_guided_score(shared_base_pipe):
    config = GuardConfig(detector="anisotropy", threshold=1e9, unconditional_pass=True)
    counter = UNetCallCounter(shared_base_pipe.unet)
    off = _run(memguard.guard(shared_base_pipe, config), guidance_scale=1.0)
    counter.remove()
    assert counter.calls == STEPS + 1 + 2  # the unconditional pass, then the low-noise text and unconditional
    guided = _run(memguard.guard(shared_base_pipe, config), guidance_scale=7.5)
    assert _scores(off) == pytest.approx(_scores(guided), rel=1e-5)  # the same x_T at the first step
    unavailable = _run(
        memguard.guard(shared_base_pipe, GuardConfig(detector="anisotropy", threshold=1e9)), guidance_scale=1.0
    )
    assert [r.status for r in unavailable.memorization] == ["unavailable", "unavailable"]


@pytest.mark.parametrize("detector", DETECTORS)
def test_no_device_read_after_the_recorded_steps(shared_base_pipe, monkeypatch, detector):
    tensor_reads = []
    original = torch.Tensor.__float__

    def spy(self):
        tensor_reads.append(self.numel())
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__float__", spy)
    guarded = memguard.guard(shared_base_pipe, GuardConfig(detector=detector, threshold=1e9, decision_step=2))
    counts = []
    for steps in (4, 12):
        tensor_reads.clear()
        _run(guarded, num_inference_steps=steps)
        counts.append(len(tensor_reads))
    assert counts[0] == counts[1]


def test_signals_are_float32_in_a_bfloat16_pipeline(base_pipe):
    base_pipe.to(torch.bfloat16)
    needs = SignalNeeds(guidance_alignment_first_step=True, latent_updates=True)
    trace = record_trace(base_pipe, PROMPTS, needs, upto_step=2, num_inference_steps=STEPS, generator=seeded(2))
    for value in (
        trace.steps[0].guidance_alignment,
        trace.steps[0].latent_update_rms,
        trace.steps[1].latent_update_rms,
    ):
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    assert trace.steps[1].guidance_alignment is None  # the first step only


# --- the user's step callback -------------------------------------------------------------------------
def test_the_users_callback_gets_exactly_the_tensors_it_asked_for(shared_base_pipe):
    pipe = shared_base_pipe
    latents = _initial_latents(pipe, 2)
    guarded = memguard.guard(pipe, GuardConfig(detector="broken_memories", threshold=1e9, decision_step=3))
    plain = _run(guarded, latents=latents.clone())
    received = []

    def mine(p, step, timestep, kwargs):
        received.append(sorted(kwargs))
        return kwargs

    for asked in (["prompt_embeds"], [], ["latents", "prompt_embeds"]):
        received.clear()
        out = _run(
            guarded,
            latents=latents.clone(),
            callback_on_step_end=mine,
            callback_on_step_end_tensor_inputs=asked,
        )
        assert received == [sorted(asked)] * STEPS
        assert _scores(out) == pytest.approx(_scores(plain), rel=1e-6)
        assert torch.equal(out.images, plain.images)


def test_the_next_update_starts_where_the_users_callback_left_the_latents(shared_base_pipe):
    pipe = shared_base_pipe
    latents = _initial_latents(pipe, 2)
    ended, continued = [], []

    def halve_the_first(p, step, timestep, kwargs):
        ended.append(kwargs["latents"].clone())
        if step == 0:
            kwargs["latents"] = kwargs["latents"] * 0.5
        continued.append(kwargs["latents"].clone())
        return kwargs

    reference = _run(pipe, latents=latents.clone(), callback_on_step_end=halve_the_first)
    first = [latents * pipe.scheduler.init_noise_sigma, *continued]
    expected = torch.stack([_rms(first[s], ended[s]) for s in range(2)]).mean(dim=0)
    guarded = memguard.guard(pipe, GuardConfig(detector="broken_memories", threshold=1e9, decision_step=2))
    out = _run(guarded, latents=latents.clone(), callback_on_step_end=halve_the_first)
    assert torch.equal(out.images, reference.images)
    assert _scores(out) == pytest.approx(expected.tolist(), rel=1e-5)


# --- every family ------------------------------------------------------------------------------------
FAMILIES = list(TINY_FAMILIES)
FAMILY_PROMPTS = ["a red circle at the top left", "a blue square on a green background"]
STRENGTH = 0.75
_IMAGE = PIL.Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8"))
_MASK = PIL.Image.fromarray(np.where(np.arange(32)[:, None] < 16, 255, 0).repeat(32, 1).astype("uint8"))


@pytest.fixture(scope="module")
def pipes():
    return {name: tiny_family_pipeline(name) for name in FAMILIES}


def _family_call(pipe, name, **kwargs):
    if "inpaint" in name:
        own = dict(image=_IMAGE, mask_image=_MASK, strength=STRENGTH, height=32, width=32)
    elif "img2img" in name:
        own = dict(image=_IMAGE, strength=STRENGTH)
    elif "controlnet" in name:
        own = dict(image=_IMAGE, height=32, width=32)
    else:
        own = dict(height=32, width=32)
    if "controlnet-" in name:  # ControlNet img2img / inpaint: the control image besides the init image
        own.update(control_image=_IMAGE, height=32, width=32)
    kwargs.setdefault("generator", [torch.Generator().manual_seed(i) for i in range(len(FAMILY_PROMPTS))])
    return pipe(FAMILY_PROMPTS, num_inference_steps=STEPS, output_type="np", **own, **kwargs)


def _steps_run(name: str) -> int:
    return int(STEPS * STRENGTH) if ("img2img" in name or "inpaint" in name) else STEPS


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_flags_with_the_parents_images_at_the_documented_cost(pipes, name, detector):
    pipe = pipes[name]
    reference = _family_call(pipe, name).images
    guarded = memguard.guard(pipe, GuardConfig(detector=detector, policy=Policy.uniform("flag"), threshold=-1e6))
    counter = UNetCallCounter(pipe.unet)
    out = _family_call(guarded, name)
    counter.remove()
    assert counter.calls == _steps_run(name) + EXTRA_CALLS[detector]
    assert np.array_equal(reference, out.images)
    assert [r.action for r in out.memorization] == ["flagged", "flagged"]
    assert all(r.status == "checked" and math.isfinite(r.score) for r in out.memorization)


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("name", ["stable-diffusion", "stable-diffusion-xl"])
def test_an_image_the_guard_does_not_act_on_is_the_parents(pipes, name, detector):
    pipe = pipes[name]
    reference = _family_call(pipe, name).images
    scores = _scores(_family_call(memguard.guard(pipe, GuardConfig(detector=detector, threshold=1e9)), name))
    assert scores[0] != scores[1]
    high, low = (0, 1) if scores[0] > scores[1] else (1, 0)
    config = GuardConfig(detector=detector, threshold=sum(scores) / 2, policy=Policy(max_attempts=1))
    out = _family_call(memguard.guard(pipe, config), name)
    assert out.memorization[high].action == "resampled" and out.memorization[low].action == "none"
    assert np.array_equal(out.images[low], reference[low])
    assert not np.array_equal(out.images[high], reference[high])
    assert math.isfinite(out.memorization[high].attempts[1].score)  # the re-sample was scored again


# --- calibration -----------------------------------------------------------------------------------
@pytest.mark.parametrize("detector, step", [("anisotropy", 1), ("broken_memories", 2)])
def test_calibrate_measures_them_and_the_guard_uses_the_calibration(shared_base_pipe, tmp_path, detector, step):
    calibration = memguard.calibrate(
        shared_base_pipe,
        [f"a red circle number {i}" for i in range(10)],
        target_fpr=0.3,
        detector=detector,
        decision_step=step,
        num_inference_steps=STEPS,
        progress=False,
    )
    assert calibration.detector == detector and math.isfinite(calibration.threshold)
    calibration.save(tmp_path / "calibration.json")
    loaded = Calibration.load(tmp_path / "calibration.json")  # the threshold is inside the score range
    out = _run(memguard.guard(shared_base_pipe, GuardConfig(calibration=loaded)))
    for report in out.memorization:
        assert report.detector == detector and report.threshold_source == "calibration"
        assert report.decided_at_step == step and math.isfinite(report.score)


def test_a_compiled_unet_gives_the_same_scores_without_graph_breaks_or_recompiles():
    from torch._dynamo.utils import counters

    from memguard.testbed.tiny import tiny_pipeline

    pipe = tiny_pipeline(seed=0)
    eager = {d: _scores(_run(memguard.guard(pipe, GuardConfig(detector=d, threshold=1e9)))) for d in DETECTORS}
    reference = _run(pipe).images
    pipe.unet = torch.compile(pipe.unet, backend="eager")  # dynamo's tracing, without a C++ build
    _run(pipe)  # compiles once
    counters.clear()
    for detector in DETECTORS:
        config = GuardConfig(detector=detector, policy=Policy.uniform("flag"), threshold=-1e6)
        out = _run(memguard.guard(pipe, config))
        assert torch.equal(out.images, reference)
        assert _scores(out) == pytest.approx(eager[detector], rel=1e-5)
    assert not counters["graph_break"] and not counters["recompiles"]
