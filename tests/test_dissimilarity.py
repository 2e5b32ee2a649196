"""The re-sample that keeps the prompt: dissimilarity guidance away from the flagged image's first estimate."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from helpers import seeded
from test_resample import _context

import memguard
from memguard import GuardConfig, Policy
from memguard.mitigation import Dissimilarity, GuidanceEdit, RepulsionEdit, ResamplePlan, ReSeed
from memguard.mitigation.edits import PREDICTION_TYPES, chain, clean_estimate, detail, layout_kernel

ALPHAS = DDIMScheduler().alphas_cumprod
T = 500.0


def _near(anchor, share, seed):
    noise = torch.randn(anchor.shape, generator=torch.Generator().manual_seed(seed))
    return share * anchor + (1 - share) * noise


def _output(x0, prediction_type, guidance, seed=3):
    """A UNet output batch (CFG: [uncond, text]) whose guided prediction has clean estimate x0, and its x_t."""
    a = float(ALPHAS[int(T)])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    pred = {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0}[prediction_type]
    if guidance is None:
        return (pred,), x_t
    uncond = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1))
    text = uncond + (pred - uncond) / guidance
    return (torch.cat([uncond, text]),), torch.cat([x_t, x_t])


def _guided_x0(output, x_t, prediction_type, guidance):
    pred = output[0]
    if guidance is not None:
        uncond, text = pred.chunk(2)
        pred, x_t = uncond + guidance * (text - uncond), x_t.chunk(2)[1]
    return clean_estimate(pred, x_t, float(ALPHAS[int(T)]), prediction_type)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("guidance", [7.5, None])
def test_repulsion_moves_a_similar_estimate_away_and_keeps_its_colours(prediction_type, guidance):
    anchor = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    edit = RepulsionEdit(anchor, ALPHAS, prediction_type, guidance or 1.0, strength=2.0, similarity_floor=0.7)
    x0 = _near(anchor, 0.9, seed=1)
    output, x_t = _output(x0, prediction_type, guidance)
    before = float(edit.similarity(x0))
    assert before > 0.7
    edited = edit(T, (output[0].clone(),), x_t)
    after = _guided_x0(edited, x_t, prediction_type, guidance)
    assert float(edit.similarity(after)) < before - 0.2
    # each latent channel's mean (the picture's overall colour) stays where the prompt put it
    torch.testing.assert_close(after.mean(dim=(2, 3)), x0.mean(dim=(2, 3)), atol=1e-4, rtol=0)
    centred = anchor - anchor.mean(dim=(2, 3), keepdim=True)
    expected = 2.0 * (before - 0.7) / 0.3 * float(centred.norm())  # strength x excess x the anchor's size
    assert float((after - x0).norm()) == pytest.approx(expected, rel=1e-3)
    if guidance is not None:  # the shift rides on the text rows; the unconditional prediction is the model's
        assert torch.equal(edited[0].chunk(2)[0], output[0].chunk(2)[0])


def _layout(seed, size=16):
    """Four flat quadrants per channel: a picture's layout and colours, no detail."""
    coarse = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")


def _fine(seed, size=16):
    return torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_layout_box_is_an_odd_share_of_the_latent_side():
    assert [layout_kernel(0.45, side) for side in (16, 64, 128)] == [7, 29, 57]
    assert layout_kernel(0.0, 64) == 1 and layout_kernel(0.05, 16) == 1
    x = _layout(0) + 0.3 * _fine(1)
    torch.testing.assert_close(detail(x, 1), x - x.mean(dim=(2, 3), keepdim=True))
    # a flat colour per large region is layout: the detail of the layout alone is small away from its edges
    flat = detail(_layout(0), 3)
    assert float(flat[..., 2:6, 2:6].abs().max()) < 1e-5
    assert float(detail(x, 3)[..., 2:6, 2:6].abs().mean()) > 0.1


def test_with_a_layout_share_the_repulsion_compares_and_moves_only_detail():
    layout, anchor_detail = _layout(0), _fine(1)
    anchor = layout + 0.3 * anchor_detail
    # the same layout with other detail: the prompt's picture, not the anchor's copy
    same_layout = layout + 0.3 * _fine(2)
    whole = RepulsionEdit(anchor, ALPHAS, "epsilon", 7.5)
    detail_only = RepulsionEdit(anchor, ALPHAS, "epsilon", 7.5, layout_share=0.45)
    assert float(whole.similarity(same_layout)) > 0.7 > float(detail_only.similarity(same_layout))
    output, x_t = _output(same_layout, "epsilon", 7.5)
    assert detail_only(T, output, x_t) is output  # nothing to push: the layout is the prompt's
    # a near copy of the anchor's detail is pushed, and less of the push lands on the layout (the
    # average per 4x4 block) than with channel means alone kept
    near = layout + 0.3 * (0.95 * anchor_detail + 0.05 * _fine(3))
    output, x_t = _output(near, "epsilon", 7.5)
    layout_share_of_change = {}
    for edit in (whole, detail_only):
        before = float(edit.similarity(near))
        after = _guided_x0(edit(T, (output[0].clone(),), x_t), x_t, "epsilon", 7.5)
        assert float(edit.similarity(after)) < before - 0.2
        change = after - near
        block_means = torch.nn.functional.avg_pool2d(change, 4)
        layout_share_of_change[edit] = 4 * float(block_means.norm()) / float(change.norm())
    assert layout_share_of_change[detail_only] < 0.8 * layout_share_of_change[whole]


def test_repulsion_leaves_a_dissimilar_estimate_and_a_call_without_its_input_alone():
    anchor = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    edit = RepulsionEdit(anchor, ALPHAS, "epsilon", 7.5)
    output, x_t = _output(_near(anchor, 0.0, seed=5), "epsilon", 7.5)
    assert edit(T, output, x_t) is output
    close, x_t = _output(_near(anchor, 0.95, seed=5), "epsilon", 7.5)
    assert edit(T, close) is close  # no UNet input to read x_t from: nothing to compute


def test_edits_chain_in_order():
    guidance = GuidanceEdit(guidance_scale=7.5, early_scale=0.0, until_timestep=650)
    anchor = torch.randn(1, 4, 8, 8)
    repulsion = RepulsionEdit(anchor, ALPHAS, "epsilon", 7.5)
    assert chain(None, repulsion) is repulsion and chain(guidance, None) is guidance
    both = chain(guidance, repulsion)
    output, x_t = _output(_near(anchor, 0.9, seed=1), "epsilon", 7.5)
    expected = repulsion(900.0, guidance(900.0, (output[0].clone(),), x_t), x_t)[0]
    torch.testing.assert_close(both(900.0, (output[0].clone(),), x_t)[0], expected)


def test_the_mitigation_keeps_the_prompt_draws_new_noise_and_is_not_rescored(shared_base_pipe):
    context = _context(shared_base_pipe)
    start = ResamplePlan(latents=context.latents, prompt=context.prompt)
    plan = Dissimilarity().apply(start, context)
    assert plan.applied == ("dissimilarity",) and plan.prompt == context.prompt and plan.prompt_embeds is None
    assert plan.edits.attention is None and not plan.rescored
    assert torch.equal(plan.latents, ReSeed().apply(start, context).latents)  # the retry's own new noise
    anchor = plan.edits.guidance.anchor
    assert anchor.shape == context.latents.shape and torch.isfinite(anchor).all()
    # the anchor is the flagged generation's first clean estimate: it depends on that generation's noise
    other = replace(context, inputs=replace(context.inputs, sample=context.inputs.sample.flip(-1)))
    assert not torch.allclose(Dissimilarity().apply(start, other).edits.guidance.anchor, anchor)
    from_image = Dissimilarity().apply(start, replace(context, latents=None))
    assert from_image.applied == ("dissimilarity(no anchor: this pipeline starts from an image)",)
    assert from_image.edits.guidance is None


@pytest.mark.parametrize(
    "bad",
    [
        dict(strength=0.0),
        dict(similarity_floor=1.0),
        dict(similarity_floor=-1.1),
        dict(layout_share=1.0),
        dict(layout_share=-0.1),
    ],
)
def test_bad_knobs_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Dissimilarity(**bad)


def _resample(pipe, mitigation):
    config = GuardConfig(threshold=0.0, mitigation=mitigation, policy=Policy(max_attempts=1, fallback="flag"))
    out = memguard.guard(pipe, config)("a red square", num_inference_steps=4, generator=seeded(1, 3), output_type="np")
    assert out.memorization[0].resamples == 1
    return out.images[0]


def test_the_guard_applies_the_repulsion_inside_the_re_sampled_loop(shared_base_pipe):
    # Same new noise either way: never engaged (floor at identity), it is a plain re-seed; engaged at
    # every step (floor -1: any similarity), the loop's predictions change.
    reseeded = _resample(shared_base_pipe, ReSeed())
    idle = _resample(shared_base_pipe, Dissimilarity(similarity_floor=0.999999))
    engaged = _resample(shared_base_pipe, Dissimilarity(strength=2.0, similarity_floor=-1.0))
    np.testing.assert_array_equal(idle, reseeded)
    assert not np.allclose(engaged, reseeded, atol=1e-3)


def _recorded_similarities(monkeypatch):
    seen = []
    original = RepulsionEdit._similarity_of

    def recording(self, detail_x0):
        value = original(self, detail_x0)
        seen.append(float(value[0]))
        return value

    monkeypatch.setattr(RepulsionEdit, "_similarity_of", recording)
    return seen


def test_a_prompt_that_a_fresh_start_does_not_pin_down_gets_the_fallback(shared_base_pipe, monkeypatch):
    seen = _recorded_similarities(monkeypatch)
    pinned = _resample(shared_base_pipe, Dissimilarity(similarity_floor=-1.0, unpinned=ReSeed(), pinned_similarity=-1))
    # the check reads the re-sample's own first clean estimate: the value its first step compares
    check, first_step = seen[0], seen[1]
    assert len(seen) == 1 + 4 and first_step == pytest.approx(check, abs=1e-5)
    reseeded = _resample(shared_base_pipe, ReSeed())
    assert not np.allclose(pinned, reseeded, atol=1e-3)  # pushed

    config = GuardConfig(
        threshold=0.0,
        mitigation=Dissimilarity(similarity_floor=-1.0, unpinned=ReSeed(), pinned_similarity=check + 1e-3),
        policy=Policy(max_attempts=1, fallback="flag"),
    )
    seen.clear()
    out = memguard.guard(shared_base_pipe, config)(
        "a red square", num_inference_steps=4, generator=seeded(1, 3), output_type="np"
    )
    assert len(seen) == 1  # checked, then not pushed
    np.testing.assert_array_equal(out.images[0], reseeded)
    assert out.memorization[0].attempts[-1].mitigation == "dissimilarity(unpinned: the fallback instead)+reseed"


def test_the_fallback_plan_is_the_fallbacks_own(shared_base_pipe):
    context = _context(shared_base_pipe)
    start = ResamplePlan(latents=context.latents, prompt=context.prompt)
    never_pinned = Dissimilarity(unpinned=ReSeed(), pinned_similarity=1.0).apply(start, context)
    assert never_pinned.applied == ("dissimilarity(unpinned: the fallback instead)", "reseed")
    assert never_pinned.edits.guidance is None and never_pinned.rescored
    always_pinned = Dissimilarity(unpinned=ReSeed(), pinned_similarity=-1.0).apply(start, context)
    assert always_pinned.applied == ("dissimilarity",) and isinstance(always_pinned.edits.guidance, RepulsionEdit)
    # where there is nothing to push from, the fallback too
    from_image = Dissimilarity(unpinned=ReSeed(), pinned_similarity=-1.0).apply(start, replace(context, latents=None))
    why = "no anchor: this pipeline starts from an image"
    expected = (f"dissimilarity({why}: the fallback instead)", "reseed(new noise drawn by the pipeline)")
    assert from_image.applied == expected


def test_bad_fallback_or_pinned_similarity_name_the_field():
    with pytest.raises(ValueError, match="pinned_similarity"):
        Dissimilarity(pinned_similarity=1.5)
    with pytest.raises(TypeError, match="Dissimilarity.unpinned"):
        Dissimilarity(unpinned="mask")
