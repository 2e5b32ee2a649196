"""The detector interface, memguard's own score and the re-implemented baselines."""

import math
from dataclasses import replace

import pytest
import torch
from helpers import PROMPTS, UNetCallCounter, seeded

import memguard
from memguard import GuardConfig
from memguard.detection import (
    DETECTORS,
    AnisotropyDetector,
    AttentionEntropyDetector,
    AttentionNoiseDetector,
    AttentionOrUpdatesDetector,
    BottleneckEntropyDetector,
    BrightEndingDetector,
    HessianDetector,
    LateAttentionEntropyDetector,
    LatentUpdateDetector,
    NoiseMagnitudeDetector,
    StandardizedBottleneckEntropyDetector,
    TopLayerEntropyDetector,
    get_detector,
    record_trace,
)
from memguard.detection.base import entropy
from memguard.detection.bottleneck import bottleneck_layers
from memguard.signals import SignalNeeds
from memguard.testbed.roc import auc, roc_curve, tpr_at_fpr

STEPS = 5
ALL = SignalNeeds(
    attention=True,
    attention_by_layer=True,
    attention_query_entropy=True,
    noise_map_first_step=True,
    end_token_map_last_step=True,
    hessian_first_step=True,
    guidance_alignment_first_step=True,
    latent_updates=True,
    all_steps=True,
)


@pytest.fixture(scope="module")
def trace(request):
    from memguard.testbed.tiny import tiny_pipeline

    pipe = tiny_pipeline(seed=0)
    return pipe, record_trace(pipe, PROMPTS, ALL, upto_step=STEPS, num_inference_steps=STEPS, generator=seeded(2))


def test_every_detector_scores_every_image_from_one_trace(trace):
    _, recorded = trace
    for name, factory in DETECTORS.items():
        detector = factory()
        if isinstance(detector, AttentionNoiseDetector | TopLayerEntropyDetector | AttentionOrUpdatesDetector):
            detector = detector.fit(detector.features(recorded, 1))  # fitted as calibrate() would
        elif hasattr(detector, "with_calibration"):  # per-layer statistics, as a calibration would give
            detector = replace(detector, layer_stats=(("unused", 0.0, 1.0),) + _stats(recorded, 0.5, 0.1))
        scores = detector.score(recorded, 1 if not detector.needs.full_run else STEPS)
        assert scores.shape == (2,) and torch.isfinite(scores).all(), name
    assert recorded.end_token_index.tolist() == [
        len(recorded_prompt.split()) + 1 for recorded_prompt in PROMPTS
    ]  # one token per word in these prompts, after the begin token


def test_memguard_score_is_the_normalized_entropy_of_the_bottleneck_layers(trace):
    pipe, recorded = trace
    layers = bottleneck_layers(recorded)
    fewest = min(recorded.layer_queries.values())
    assert layers and all(recorded.layer_queries[name] == fewest for name in layers)
    assert any(q > fewest for q in recorded.layer_queries.values())  # not simply every layer
    mass = torch.stack([recorded.steps[0].attention_by_layer[n] for n in layers]).mean(0)
    expected = entropy(mass) / math.log(mass.shape[1])
    assert BottleneckEntropyDetector().score(recorded, 1) == pytest.approx(expected.tolist(), rel=1e-6)
    assert ((expected > 0) & (expected <= 1)).all()


def _stats(recorded, mean: float, spread: float) -> tuple:
    return tuple((name, mean, spread) for name in bottleneck_layers(recorded))


def test_the_standardized_score_averages_each_bottleneck_layers_standardized_entropy(trace):
    _, recorded = trace
    layers = bottleneck_layers(recorded)
    stats = tuple((name, 0.1 * k, 0.5 + k) for k, name in enumerate(layers))  # a different scale per layer
    by_hand = []
    for name, mean, spread in stats:
        mass = recorded.steps[0].attention_by_layer[name]
        by_hand.append((entropy(mass) / math.log(mass.shape[1]) - mean) / spread)
    expected = torch.stack(by_hand).mean(0)
    score = StandardizedBottleneckEntropyDetector(layer_stats=stats).score(recorded, 1)
    assert score.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="no calibration statistics for layer"):
        StandardizedBottleneckEntropyDetector(layer_stats=(("another.layer", 0.0, 1.0),)).score(recorded, 1)
    with pytest.raises(ValueError, match="benign spread"):
        StandardizedBottleneckEntropyDetector(layer_stats=(("mid_block", 0.5, 0.0),))


def test_the_combined_score_adds_standardized_mean_layer_entropy_and_standardized_log_noise(trace):
    _, recorded = trace
    layers = sorted(recorded.layer_queries)
    assert len(layers) > len(bottleneck_layers(recorded))  # every cross-attention layer, not the bottleneck
    stats = tuple((name, 0.1 * k, 0.5 + k) for k, name in enumerate(layers))  # a different scale per layer
    detector = AttentionNoiseDetector(layer_stats=stats, attention_stats=(0.2, 3.0), noise_stats=(-1.0, 0.25))
    for upto in (1, 3):
        per_layer = []
        for name, mean, spread in stats:
            mass = torch.stack([recorded.steps[s].attention_by_layer[name] for s in range(upto)]).mean(0)
            per_layer.append((entropy(mass) / math.log(mass.shape[1]) - mean) / spread)
        attention = (torch.stack(per_layer).mean(0) - 0.2) / 3.0
        rms = torch.stack([recorded.steps[s].noise_rms for s in range(upto)]).mean(0)
        expected = attention + (rms.log() + 1.0) / 0.25
        assert detector.score(recorded, upto).tolist() == pytest.approx(expected.tolist(), rel=1e-5)


def test_the_combined_score_is_refused_unfitted_or_on_another_models_layers(trace):
    _, recorded = trace
    with pytest.raises(ValueError, match="needs statistics of benign prompts"):
        AttentionNoiseDetector().score(recorded, 1)
    fitted = AttentionNoiseDetector().fit(AttentionNoiseDetector().features(recorded, 1))
    assert fitted.fitted and fitted.with_state(fitted.state()) == fitted
    other = replace(fitted, layer_stats=fitted.layer_stats[1:])
    with pytest.raises(ValueError, match="cross-attention layers differ from the calibration"):
        other.score(recorded, 1)
    state = fitted.state()
    for bad, message in (
        ({**state, "noise_stats": [0.0, 0.0]}, "spread must be > 0"),
        ({**state, "noise_stats": [True, 1.0]}, "two finite numbers"),
        ({**state, "attention_stats": [float("nan"), 1.0]}, "two finite numbers"),
        ({**state, "attention_stats": None}, "must be \\[mean, std\\]"),
        ({**state, "layer_stats": {}}, "holds no layer_stats"),
        ({**state, "layer_stats": {"mid": [0.5]}}, "must be \\[mean, std\\]"),
    ):
        with pytest.raises(ValueError, match=message):
            AttentionNoiseDetector().with_state(bad)


def _layer_z(recorded, stats, upto):
    """(layers, N) each layer's normalized entropy over the first `upto` steps, standardized by hand."""
    rows = []
    for name, mean, spread in stats:
        mass = torch.stack([recorded.steps[s].attention_by_layer[name] for s in range(upto)]).mean(0)
        rows.append((entropy(mass) / math.log(mass.shape[1]) - mean) / spread)
    return torch.stack(rows)


def test_the_default_score_averages_the_most_raised_standardized_layers(trace):
    _, recorded = trace
    layers = sorted(recorded.layer_queries)
    stats = tuple((name, 0.1 * k, 0.5 + k) for k, name in enumerate(layers))  # a different scale per layer
    for upto in (1, 3):
        z = _layer_z(recorded, stats, upto)
        for top in (1, 2, len(layers)):
            expected = z.sort(dim=0, descending=True).values[:top].mean(0)
            score = TopLayerEntropyDetector(layer_stats=stats, top_layers=top).score(recorded, upto)
            assert score.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
        # one layer is the maximum, all layers the plain mean: the default sits between them
        top2 = TopLayerEntropyDetector(layer_stats=stats, top_layers=2).score(recorded, upto)
        assert (top2 <= z.max(0).values + 1e-6).all() and (top2 >= z.mean(0) - 1e-6).all()


@pytest.mark.parametrize("layers, expected", [(1, 1), (2, 2), (3, 3), (7, 3), (12, 3), (13, 4), (16, 4), (70, 18)])
def test_the_default_score_averages_a_quarter_of_the_layers_and_at_least_three(layers, expected):
    from memguard.detection.top_layers import top_layer_count

    assert top_layer_count(layers) == expected


def test_a_layer_outside_the_top_ones_cannot_move_the_default_score():
    detector = TopLayerEntropyDetector(layer_stats=tuple((f"l{k}", 0.0, 1.0) for k in range(5)), top_layers=2)
    features = {f"l{k}": torch.tensor([float(k), 4.0 - k]) for k in range(5)}
    base = detector.score_features(features)
    assert base.tolist() == pytest.approx([3.5, 3.5])
    lowered = {**features, "l1": torch.tensor([-50.0, 3.0])}  # l1 is not among image 0's top two
    assert detector.score_features(lowered).tolist() == pytest.approx([3.5, 3.5])
    raised = {**features, "l0": torch.tensor([9.0, 5.0])}  # raising a layer into the top two raises the score
    assert detector.score_features(raised).tolist() == pytest.approx([6.5, 4.0])


def test_the_default_score_is_fitted_saved_and_refused_unfitted_or_on_another_model(trace):
    _, recorded = trace
    with pytest.raises(ValueError, match="needs per-layer statistics of benign prompts"):
        TopLayerEntropyDetector().score(recorded, 1)
    features = TopLayerEntropyDetector().features(recorded, 1)
    fitted = TopLayerEntropyDetector().fit(features)
    assert fitted.fitted and fitted.with_state(fitted.state()) == fitted
    assert fitted.top_layers == 3 and [name for name, _, _ in fitted.layer_stats] == sorted(recorded.layer_queries)
    for name, mean, spread in fitted.layer_stats:
        values = features[name].double()
        assert (mean, spread) == pytest.approx((float(values.mean()), float(values.std())))
    other = replace(fitted, layer_stats=fitted.layer_stats[1:])
    with pytest.raises(ValueError, match="cross-attention layers differ from the calibration"):
        other.score(recorded, 1)
    state = fitted.state()
    for bad, message in (
        ({**state, "top_layers": 0}, "top_layers must be a whole number from 1"),
        ({**state, "top_layers": len(fitted.layer_stats) + 1}, "top_layers must be a whole number from 1"),
        ({**state, "top_layers": True}, "top_layers must be a whole number"),
        ({k: v for k, v in state.items() if k != "top_layers"}, "top_layers must be a whole number"),
        ({**state, "layer_stats": {}}, "holds no layer_stats"),
        ({**state, "layer_stats": {"mid": [0.5, 0.0]}}, "spread must be > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            TopLayerEntropyDetector().with_state(bad)
    with pytest.raises(ValueError, match="top_fraction must be in"):
        TopLayerEntropyDetector(top_fraction=0.0)


def test_jeon_hessian_product_matches_finite_differences(trace):
    pipe, recorded = trace
    step0 = recorded.steps[0]
    # recompute (J_c - J_u) v by central differences around the first step's latents
    assert step0.hessian_rms is not None
    calls = []

    def hook(module, args, kwargs):
        calls.append((args, kwargs))

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    record_trace(pipe, PROMPTS, SignalNeeds(), upto_step=1, num_inference_steps=STEPS, generator=seeded(2))
    handle.remove()
    args, kwargs = calls[0]
    sample = args[0] if args else kwargs["sample"]
    timestep = args[1] if len(args) > 1 else kwargs["timestep"]
    states = kwargs["encoder_hidden_states"]
    x = sample[2:]

    def difference(z):
        out = pipe.unet(torch.cat([z, z]), timestep, encoder_hidden_states=states, return_dict=False)[0]
        u, c = out.chunk(2)
        return c - u

    with torch.no_grad():
        v = difference(x)
        # a step of about 1e-3 per latent element: small against the latents, large against float32 noise
        h = (1e-3 / (v.flatten(1).norm(dim=1) / math.sqrt(v[0].numel()))).view(-1, 1, 1, 1)
        product = (difference(x + h * v) - difference(x - h * v)) / (2 * h)
    rms = product.flatten(1).norm(dim=1) / math.sqrt(product[0].numel())
    assert HessianDetector().score(recorded, 1) == pytest.approx(rms.tolist(), rel=2e-2)


def test_missing_signals_give_nan_not_a_guess(trace):
    pipe, _ = trace
    bare = record_trace(pipe, PROMPTS, SignalNeeds(), upto_step=1, num_inference_steps=STEPS, generator=seeded(2))
    for detector in (
        BottleneckEntropyDetector(),
        HessianDetector(),
        AttentionEntropyDetector(),
        BrightEndingDetector(),
        AnisotropyDetector(),
        LatentUpdateDetector(),
    ):
        assert torch.isnan(detector.score(bare, 1)).all(), detector.name
    assert bare.steps[0].guidance_alignment is None and bare.steps[0].latent_update_rms is None  # not asked: not read
    assert torch.isfinite(NoiseMagnitudeDetector().score(bare, 1)).all()


def test_early_detectors_stop_the_recording_loop_and_post_hoc_ones_run_it_all(trace):
    pipe, _ = trace
    counter = UNetCallCounter(pipe.unet)
    record_trace(
        pipe, PROMPTS, SignalNeeds(attention=True), upto_step=2, num_inference_steps=STEPS, generator=seeded(2)
    )
    early = counter.calls
    record_trace(
        pipe, PROMPTS, LateAttentionEntropyDetector().needs, upto_step=2, num_inference_steps=STEPS, generator=seeded(2)
    )
    counter.remove()
    assert early == 2 and counter.calls - early == STEPS


def test_the_guard_uses_the_configured_detector(shared_base_pipe):
    out = memguard.guard(shared_base_pipe, GuardConfig(detector="jeon_hessian", threshold=0.0))(
        PROMPTS, num_inference_steps=STEPS, generator=seeded(2), output_type="np"
    )
    assert {r.detector for r in out.memorization} == {"jeon_hessian"}
    post_hoc = memguard.guard(
        shared_base_pipe,
        GuardConfig(detector=BrightEndingDetector(), threshold=1e9, policy=memguard.Policy.uniform("flag")),
    )(PROMPTS, num_inference_steps=STEPS, generator=seeded(2), output_type="np")
    assert {r.decided_at_step for r in post_hoc.memorization} == {STEPS}
    assert all(math.isfinite(r.score) for r in post_hoc.memorization)


def test_detector_configuration_errors_are_clear(shared_base_pipe):
    with pytest.raises(ValueError, match="unknown detector 'wen'"):
        GuardConfig(detector="wen")
    with pytest.raises(TypeError, match="name, needs and score"):
        get_detector(object())
    calibration = memguard.calibrate(
        shared_base_pipe,
        [f"a red circle number {i}" for i in range(10)],
        target_fpr=0.3,
        num_inference_steps=2,
        progress=False,
    )
    with pytest.raises(ValueError, match="differs from the calibration's detector"):
        GuardConfig(calibration=calibration, detector="noise_rms")
    GuardConfig(calibration=calibration, detector="noise_rms", threshold=0.1)  # explicit threshold: allowed
    with pytest.raises(ValueError, match="no model-free default threshold"):
        memguard.guard(shared_base_pipe, GuardConfig(detector="bottleneck_entropy"))(
            PROMPTS, num_inference_steps=2, generator=seeded(2)
        )


def test_a_resample_is_scored_on_the_attention_its_mitigation_uses(shared_base_pipe):
    from memguard.mitigation import AttentionRescale

    config = GuardConfig(
        detector="bottleneck_entropy",
        threshold=-1.0,  # everything memorized: the default policy re-samples
        mitigation=AttentionRescale(scope="all"),
        policy=memguard.Policy(max_attempts=1),
    )
    out = memguard.guard(shared_base_pipe, config)(PROMPTS, num_inference_steps=STEPS, generator=seeded(2))
    for report in out.memorization:
        first, resample = report.attempts
        # every prompt position masked: the bottleneck attends only to the begin token, entropy ~0
        assert first.score > 0.5 and resample.score < 1e-3


def test_roc_figures():
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1], [1]) == 0.5 and auc([0], [1]) == 0.0
    negatives = list(range(100))
    assert tpr_at_fpr([98.5, 50], negatives, 0.01) == 0.5  # one negative (99) may pass: threshold 98
    assert tpr_at_fpr([float("nan")], negatives, 0.01) == 0.0  # unavailable counts as not memorized
    fpr, tpr = roc_curve([2, 3], [1, 2])
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and all(b >= a for a, b in zip(fpr, fpr[1:], strict=False))
