"""Every row of the README's bad-input table: a clear error naming the argument."""

import pytest
from conftest import PROMPTS, seeded
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

import memguard
from memguard import GuardConfig, GuardedStableDiffusionPipeline
from memguard.testbed.tiny import tiny_pipeline

SECRET = "the secret family photo of Jane Q. Example"


def test_decision_step_beyond_the_number_of_steps(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(decision_step=5))
    with pytest.raises(ValueError, match=r"decision_step=5 is beyond num_inference_steps=4") as err:
        guarded(SECRET, num_inference_steps=4)
    assert SECRET not in str(err.value)


def test_unknown_attention_layer(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe, GuardConfig(attention_layers=("mid_block.attentions.9.attn2",)))
    with pytest.raises(
        ValueError, match=r"attention_layers: 'mid_block.attentions.9.attn2' is not a cross-attention layer"
    ):
        guarded(SECRET, num_inference_steps=2)


def test_calibration_of_another_model(shared_base_pipe):
    benign = [f"prompt number {i}" for i in range(10)]
    calibration = memguard.calibrate(
        tiny_pipeline(seed=1), benign, target_fpr=0.1, num_inference_steps=2, progress=False
    )
    guarded = memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    with pytest.raises(ValueError, match="calibration was measured on another model"):
        guarded(SECRET, num_inference_steps=2)


def test_unsupported_pipeline_classes():
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    unconditional = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(
        TypeError, match=r"no guard for DDPMPipeline; it guards StableDiffusionPipeline, .*XLControlNet"
    ):
        memguard.guard(unconditional)
    with pytest.raises(TypeError, match="got str"):
        GuardedStableDiffusionPipeline.from_pipe("runwayml/stable-diffusion-v1-5")


def test_guard_argument_of_the_wrong_type(shared_base_pipe):
    with pytest.raises(TypeError, match="memguard.GuardConfig"):
        memguard.guard(shared_base_pipe, {"action": "block"})


def test_unknown_call_argument(shared_base_pipe):
    with pytest.raises(TypeError, match="num_inference_step"):
        memguard.guard(shared_base_pipe)(SECRET, num_inference_step=3)


@pytest.mark.parametrize(
    "prompts, kwargs, error, match",
    [
        ([], {}, ValueError, "benign_prompts is empty"),
        ("one prompt", {}, TypeError, "sequence of prompt strings"),
        ([SECRET] * 5, {"target_fpr": 0.01}, ValueError, "at least 100 benign scores"),
        ([SECRET] * 5, {"target_fpr": 1.5}, ValueError, "target_fpr"),
    ],
)
def test_calibrate_bad_input(shared_base_pipe, prompts, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        memguard.calibrate(shared_base_pipe, prompts, num_inference_steps=2, progress=False, **kwargs)
    assert SECRET not in str(err.value)


def test_score_refuses_arguments_it_sets_itself(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    with pytest.raises(TypeError, match="'generator'"):
        guarded.score(PROMPTS, generator=seeded(1))
    with pytest.raises(ValueError, match="batch_size"):
        guarded.score(PROMPTS, batch_size=0)
