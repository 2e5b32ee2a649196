"""Signals are right, read through public seams, cost no extra UNet call, and never leak across calls."""

import inspect
import math
import threading

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from helpers import PROMPTS, UNetCallCounter, initial_latents, run_tiny, seeded

import memguard
from memguard import GuardConfig
from memguard.signals import CrossAttentionTap, cross_attention_layers, is_installed

STEPS = 4


def _run(pipe, prompts=PROMPTS, **kwargs):
    return run_tiny(pipe, prompts, STEPS, **kwargs)


_initial_latents = initial_latents


def test_noise_magnitude_equals_a_direct_computation(shared_base_pipe):
    pipe = shared_base_pipe
    latents = _initial_latents(pipe, 2)
    out = _run(memguard.guard(pipe), latents=latents.clone())
    # Direct: the first step's UNet on x_T with the prompt and with the empty prompt.
    cond, uncond = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    pipe.scheduler.set_timesteps(STEPS)
    t = pipe.scheduler.timesteps[0]
    x = pipe.scheduler.scale_model_input(latents * pipe.scheduler.init_noise_sigma, t)
    with torch.no_grad():
        eps_text = pipe.unet(x, t, encoder_hidden_states=cond).sample
        eps_uncond = pipe.unet(x, t, encoder_hidden_states=uncond).sample
    expected = (eps_text - eps_uncond).flatten(1).norm(dim=1)
    got = torch.tensor([r.signals["noise_norm"] for r in out.memorization])
    assert torch.allclose(got, expected, rtol=1e-4)
    rms = torch.tensor([r.signals["noise_rms"] for r in out.memorization])
    assert torch.allclose(rms, expected / math.sqrt(eps_text[0].numel()), rtol=1e-4)
    assert [r.score for r in out.memorization] == pytest.approx(rms.tolist())  # the default detector's score


def test_signals_cost_no_extra_unet_evaluation(shared_base_pipe):
    counter = UNetCallCounter(shared_base_pipe.unet)
    _run(memguard.guard(shared_base_pipe, GuardConfig(record_all_steps=True)))
    assert counter.calls == STEPS
    counter.remove()


def test_score_averages_the_first_k_steps(shared_base_pipe):
    every_step = _run(memguard.guard(shared_base_pipe, GuardConfig(decision_step=1)))
    first_three = _run(memguard.guard(shared_base_pipe, GuardConfig(decision_step=3)))
    per_step = []
    for k in (1, 2, 3):
        config = GuardConfig(decision_step=k)
        per_step.append([r.signals["noise_norm"] for r in _run(memguard.guard(shared_base_pipe, config)).memorization])
    # mean over steps 1..k  ->  step-k value = k*mean_k - (k-1)*mean_{k-1}
    step_values = np.array(
        [per_step[0], 2 * np.array(per_step[1]) - per_step[0], 3 * np.array(per_step[2]) - 2 * np.array(per_step[1])]
    )
    assert [r.signals["noise_norm"] for r in first_three.memorization] == pytest.approx(
        step_values.mean(axis=0).tolist()
    )
    assert first_three.memorization[0].score != pytest.approx(every_step.memorization[0].score)


def test_guidance_off_reports_unavailable_or_pays_one_unconditional_pass(shared_base_pipe):
    off = _run(memguard.guard(shared_base_pipe), guidance_scale=1.0)
    assert [r.status for r in off.memorization] == ["unavailable", "unavailable"]
    assert all(math.isnan(r.score) and not r.memorized and "unconditional_pass" in r.reason for r in off.memorization)
    assert "noise_norm" not in off.memorization[0].signals
    assert "attention_entropy" in off.memorization[0].signals  # attention exists without guidance

    counter = UNetCallCounter(shared_base_pipe.unet)
    extra = _run(memguard.guard(shared_base_pipe, GuardConfig(unconditional_pass=True)), guidance_scale=1.0)
    counter.remove()
    assert counter.calls == STEPS + 1  # one extra pass, at the single step before the decision
    # At step 1 both runs see the same x_T: the extra pass must give the CFG run's magnitude.
    cfg = _run(memguard.guard(shared_base_pipe), guidance_scale=7.5)
    assert [r.score for r in extra.memorization] == pytest.approx([r.score for r in cfg.memorization], rel=1e-5)


class RecordingProcessor(AttnProcessor):
    """The classic (non-fused) processor, keeping the attention probabilities it computed."""

    def __init__(self):
        super().__init__()
        self.probs = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None:
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probs = attn.get_attention_scores(query, key, None)  # (batch*heads, queries, tokens)
            self.probs.append(probs.view(-1, attn.heads, *probs.shape[1:]))
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def test_attention_statistics_match_a_reference_processor(base_pipe):
    layers = cross_attention_layers(base_pipe.unet)
    recorders = {name: RecordingProcessor() for name in layers}
    for name, module in layers.items():
        module.set_processor(recorders[name])
    out = _run(memguard.guard(base_pipe))
    # Reference: step 1 (the first call of each layer), text half of the CFG batch, mean over heads,
    # queries and layers, then entropy over tokens.
    mass = torch.stack([rec.probs[0][2:].mean(dim=(1, 2)) for rec in recorders.values()]).mean(dim=0)
    mass = mass / mass.sum(dim=1, keepdim=True)
    entropy = -(mass * mass.log()).sum(dim=1)
    assert [r.signals["attention_entropy"] for r in out.memorization] == pytest.approx(entropy.tolist(), rel=1e-4)
    assert [r.signals["attention_begin_mass"] for r in out.memorization] == pytest.approx(mass[:, 0].tolist(), rel=1e-4)
    # The user's processors ran under the guard and were put back afterwards.
    assert all(len(rec.probs) == STEPS for rec in recorders.values())
    assert all(layers[name].processor is recorders[name] for name in layers)


def test_only_configured_layers_and_steps_compute_probabilities(shared_base_pipe, monkeypatch):
    calls = []
    original = memguard.signals.SignalRecorder.on_cross_attention

    def spy(self, layer_name, *args):
        calls.append((layer_name, self.step))
        return original(self, layer_name, *args)

    monkeypatch.setattr(memguard.signals.SignalRecorder, "on_cross_attention", spy)
    layer = sorted(cross_attention_layers(shared_base_pipe.unet))[0]
    _run(memguard.guard(shared_base_pipe, GuardConfig(attention_layers=(layer + ".processor",), decision_step=2)))
    assert calls == [(layer, 0), (layer, 1)]
    calls.clear()
    _run(memguard.guard(shared_base_pipe, GuardConfig(record_attention=False)))
    assert calls == []


def test_no_device_read_after_the_recorded_steps(shared_base_pipe, monkeypatch):
    # Reading a device tensor as a number waits for the device: on a GPU a read on every step stops the
    # host from queueing the next UNet call ahead. Past the decision step the guard reads nothing.
    tensor_reads = []
    original = torch.Tensor.__float__

    def spy(self):
        tensor_reads.append(self.numel())
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__float__", spy)
    guarded = memguard.guard(shared_base_pipe, GuardConfig(decision_step=2, act_uncalibrated=True))
    counts = []
    for steps in (4, 12):
        tensor_reads.clear()
        _run(guarded, num_inference_steps=steps)
        counts.append(len(tensor_reads))
    assert counts[0] == counts[1]


def test_wrapped_processor_keeps_its_signature_and_receives_its_kwargs(base_pipe):
    received = []

    class ScaledProcessor(AttnProcessor2_0):
        def __call__(
            self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, my_scale=1.0
        ):
            received.append(my_scale)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb) * my_scale

    base_pipe.unet.set_attn_processor(ScaledProcessor())
    reference = _run(base_pipe, cross_attention_kwargs={"my_scale": 0.5}).images
    received.clear()
    guarded = _run(memguard.guard(base_pipe), cross_attention_kwargs={"my_scale": 0.5})
    assert received and set(received) == {0.5}  # diffusers filters kwargs by signature: ours exposes theirs
    assert torch.equal(reference, guarded.images)
    tap = CrossAttentionTap(ScaledProcessor(), "x")
    assert "my_scale" in inspect.signature(tap.__call__).parameters


def test_taps_are_removed_when_the_call_ends_or_raises(base_pipe):
    before = dict(base_pipe.unet.attn_processors)
    guarded = memguard.guard(base_pipe)
    _run(guarded)
    assert not is_installed(base_pipe.unet)

    def failing_callback(pipe, step, timestep, kwargs):
        assert is_installed(pipe.unet)
        raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        _run(guarded, callback_on_step_end=failing_callback)
    assert not is_installed(base_pipe.unet)
    assert base_pipe.unet._forward_hooks == {} and base_pipe.unet._forward_pre_hooks == {}
    assert dict(base_pipe.unet.attn_processors) == before


def test_threads_sharing_one_unet_never_mix_signals(shared_base_pipe):
    first = memguard.guard(shared_base_pipe, GuardConfig(decision_step=3))
    second = memguard.guard(shared_base_pipe, GuardConfig(decision_step=3))
    assert first.unet is second.unet
    jobs = {
        "a": (first, ["a red square"] * 2, 1),
        "b": (second, ["the famous painting of a lady", "a castle by the sea"], 7),
    }
    expected = {
        key: [r.signals for r in _run(p, prompts, generator=seeded(2, s)).memorization]
        for key, (p, prompts, s) in jobs.items()
    }
    results, errors = {key: [] for key in jobs}, []

    def work(key):
        pipe, prompts, seed = jobs[key]
        try:
            for _ in range(6):
                results[key].append([r.signals for r in _run(pipe, prompts, generator=seeded(2, seed)).memorization])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(key,)) for key in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for key in jobs:
        for got in results[key]:
            for got_image, expected_image in zip(got, expected[key], strict=True):
                assert got_image == pytest.approx(expected_image, rel=1e-5)
    assert expected["a"][0]["noise_norm"] != pytest.approx(expected["b"][0]["noise_norm"])
    assert not is_installed(shared_base_pipe.unet)


def test_statistics_are_float32_in_a_bfloat16_pipeline(base_pipe, monkeypatch):
    base_pipe.to(torch.bfloat16)
    dtypes = []
    original = memguard.signals.SignalTrace.record_attention

    def spy(self, step, mass, layer=None):
        dtypes.append(mass.dtype)
        return original(self, step, mass, layer)

    monkeypatch.setattr(memguard.signals.SignalTrace, "record_attention", spy)
    out = _run(memguard.guard(base_pipe))
    assert dtypes and set(dtypes) == {torch.float32}
    for report in out.memorization:
        assert report.status == "checked"
        assert all(math.isfinite(v) for v in report.signals.values())
