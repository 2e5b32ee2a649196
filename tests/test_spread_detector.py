"""`attention_spread`: per layer, the entropy of the mean attention and the mean entropy of each
query's attention, standardized on benign prompts, the most raised averaged."""

import math

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor
from helpers import PROMPTS, seeded

import memguard
from memguard.detection import (
    CALIBRATED_DEFAULT,
    AttentionSpreadDetector,
    TopLayerEntropyDetector,
    get_detector,
    record_trace,
)
from memguard.detection.base import entropy
from memguard.detection.spread import ENTROPY_PREFIX, QUERY_ENTROPY_PREFIX
from memguard.detection.top_layers import top_layer_count
from memguard.signals import SignalNeeds, cross_attention_layers


class _QueryEntropyProbe(AttnProcessor):
    """diffusers' plain processor that also keeps, per call, each conditional row's mean query entropy,
    computed with diffusers' own attention scores (not memguard's)."""

    def __init__(self, seen: list):
        super().__init__()
        self.seen = seen

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None:
            rows = hidden_states.shape[0] // 2  # classifier-free guidance: the text rows come second
            query = attn.head_to_batch_dim(attn.to_q(hidden_states[rows:]))
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states[rows:]))
            probs = attn.get_attention_scores(query, key).float()  # (rows * heads, Q, T)
            per_query = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
            self.seen.append(per_query.reshape(rows, attn.heads, -1).mean(dim=(1, 2)))
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


@pytest.fixture(scope="module")
def tiny():
    from memguard.testbed.tiny import tiny_pipeline

    return tiny_pipeline(seed=0)


def _trace(pipe, needs, steps=2, prompts=PROMPTS):
    return record_trace(pipe, prompts, needs, upto_step=steps, num_inference_steps=4, generator=seeded(len(prompts)))


def test_the_recorded_query_entropy_is_diffusers_own_attention_entropy_per_query(tiny):
    layers = sorted(cross_attention_layers(tiny.unet))
    seen = {name: [] for name in layers}
    saved = dict(tiny.unet.attn_processors)
    tiny.unet.set_attn_processor(
        {
            name: _QueryEntropyProbe(seen[name.removesuffix(".processor")])
            if name.removesuffix(".processor") in seen
            else processor
            for name, processor in saved.items()
        }
    )
    try:
        recorded = _trace(tiny, SignalNeeds(attention=True, attention_by_layer=True, attention_query_entropy=True), 1)
    finally:
        tiny.unet.set_attn_processor(saved)
    for name in layers:
        expected = seen[name][0]  # the first step's call
        got = recorded.steps[0].query_entropy_by_layer[name]
        assert got.shape == (len(PROMPTS),)
        assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
        # each query's entropy averages to at most the entropy of the averaged attention (concavity)
        assert (got <= entropy(recorded.steps[0].attention_by_layer[name]) + 1e-5).all()


def test_the_query_entropy_is_recorded_only_when_a_detector_needs_it(tiny):
    recorded = _trace(tiny, SignalNeeds(attention=True, attention_by_layer=True), 1)
    assert recorded.steps[0].attention_by_layer and not recorded.steps[0].query_entropy_by_layer
    # a detector that needs it cannot score such a trace: unavailable, not a crash
    detector = AttentionSpreadDetector()
    assert detector.features(recorded, 1) is None
    fitted = detector.fit(detector.features(_trace(tiny, detector.needs, 1), 1))
    assert torch.isnan(fitted.score(recorded, 1)).all()


def test_the_score_averages_the_most_raised_of_both_statistics_of_every_layer(tiny):
    detector = AttentionSpreadDetector()
    recorded = _trace(tiny, detector.needs, 3)
    layers = sorted(recorded.layer_queries)
    for upto in (1, 3):
        features = detector.features(recorded, upto)
        assert sorted(features) == sorted(
            [ENTROPY_PREFIX + name for name in layers] + [QUERY_ENTROPY_PREFIX + name for name in layers]
        )
        for name in layers:  # both divided by log T and averaged over the first `upto` steps
            tokens = recorded.steps[0].attention_by_layer[name].shape[-1]
            mass = torch.stack([recorded.steps[s].attention_by_layer[name] for s in range(upto)]).mean(0)
            per_query = torch.stack([recorded.steps[s].query_entropy_by_layer[name] for s in range(upto)]).mean(0)
            assert features[ENTROPY_PREFIX + name].tolist() == pytest.approx(
                (entropy(mass) / math.log(tokens)).tolist(), rel=1e-5
            )
            assert features[QUERY_ENTROPY_PREFIX + name].tolist() == pytest.approx(
                (per_query / math.log(tokens)).tolist(), rel=1e-5
            )
        names = sorted(features)
        stats = tuple((name, 0.05 * k, 0.3 + k) for k, name in enumerate(names))  # a scale per feature
        z = torch.stack([(features[name].double() - mean) / spread for name, mean, spread in stats])
        for top in (1, 3, len(names)):
            score = AttentionSpreadDetector(layer_stats=stats, top_layers=top).score(recorded, upto)
            expected = z.sort(dim=0, descending=True).values[:top].mean(0)
            assert score.tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_the_fit_counts_features_saves_and_refuses_another_model(tiny):
    detector = AttentionSpreadDetector()
    with pytest.raises(ValueError, match="attention_spread.*needs per-layer statistics of benign prompts"):
        detector.score(_trace(tiny, detector.needs, 1), 1)
    features = detector.features(_trace(tiny, detector.needs, 1), 1)
    fitted = detector.fit(features)
    assert fitted.top_layers == top_layer_count(len(features))  # a quarter of the features, at least three
    assert fitted.with_state(fitted.state()) == fitted
    for name, mean, spread in fitted.layer_stats:
        values = features[name].double()
        assert (mean, spread) == pytest.approx((float(values.mean()), float(values.std())))
    # top_layer_entropy's state (entropies alone) is not this detector's: refused when scoring
    entropies_only = TopLayerEntropyDetector().fit(
        TopLayerEntropyDetector().features(_trace(tiny, detector.needs, 1), 1)
    )
    n = len(features)  # two per layer: counted as features, not layers
    with pytest.raises(
        ValueError,
        match=rf"layers differ from the calibration's \({n} per-layer features recorded, {n // 2} calibrated\)",
    ):
        detector.with_state(entropies_only.state()).score(_trace(tiny, detector.needs, 1), 1)


def test_calibrate_fits_it_by_name_and_a_guarded_call_serves_it(tiny):
    from helpers import BENIGN_SCENES

    assert isinstance(get_detector("attention_spread"), AttentionSpreadDetector)
    assert CALIBRATED_DEFAULT == "top_layer_entropy"  # opt-in: it flags more one-word prompts
    guarded = memguard.guard(tiny)
    calibration = memguard.calibrate(
        guarded,
        BENIGN_SCENES,
        target_fpr=0.2,
        detector="attention_spread",
        num_inference_steps=4,
        batch_size=8,
        progress=False,
    )
    assert calibration.detector == "attention_spread"
    assert set(calibration.fitted_state["layer_stats"]) == {
        prefix + name for prefix in (ENTROPY_PREFIX, QUERY_ENTROPY_PREFIX) for name in cross_attention_layers(tiny.unet)
    }
    guarded.guard_config = guarded.guard_config.replace(calibration=calibration)
    out = guarded(PROMPTS, num_inference_steps=4, generator=seeded(2), output_type="np")
    fitted = AttentionSpreadDetector().with_calibration(calibration)
    expected = fitted.score(_trace(tiny, fitted.needs, 1), 1)
    assert [r.score for r in out.memorization] == pytest.approx(expected.tolist(), rel=1e-5)
