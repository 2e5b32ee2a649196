"""Every row of the README's bad-input table: a clear error naming the argument."""

import PIL.Image
import pytest
from conftest import PROMPTS, seeded
from diffusers import DDPMPipeline, DDPMScheduler, StableDiffusionImg2ImgPipeline, UNet2DModel

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


def test_a_controlnet_image_of_the_wrong_batch_size_names_the_argument():
    from memguard.testbed.tiny import tiny_family_pipeline

    guarded = memguard.guard(tiny_family_pipeline("stable-diffusion-controlnet"))
    images = [PIL.Image.new("RGB", (32, 32))] * 3  # three control images for two prompts
    with pytest.raises(ValueError, match="image batch size") as err:
        guarded([SECRET, "a red circle"], image=images, num_inference_steps=2, height=32, width=32)
    assert SECRET not in str(err.value)


def test_strength_that_leaves_fewer_steps_than_the_decision_step_names_strength():
    from memguard.testbed.tiny import tiny_family_pipeline

    guarded = memguard.guard(tiny_family_pipeline("stable-diffusion-img2img"), GuardConfig(decision_step=3))
    with pytest.raises(
        ValueError, match=r"decision_step=3 is beyond the 2 denoising step\(s\) that strength=0.5"
    ) as err:
        guarded(SECRET, image=PIL.Image.new("RGB", (32, 32)), strength=0.5, num_inference_steps=4)
    assert SECRET not in str(err.value) and "raise strength or num_inference_steps" in str(err.value)


def test_a_calibration_of_another_family_names_the_calibration(shared_base_pipe):
    benign = [f"prompt number {i}" for i in range(10)]
    calibration = memguard.calibrate(shared_base_pipe, benign, target_fpr=0.1, num_inference_steps=2, progress=False)
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(
        memguard.guard(shared_base_pipe, GuardConfig(calibration=calibration))
    )
    with pytest.raises(ValueError, match=r"GuardConfig.calibration was measured on a 'stable-diffusion' pipeline"):
        img2img(SECRET, image=PIL.Image.new("RGB", (32, 32)), num_inference_steps=2)


def test_num_inference_steps_none_names_the_argument(shared_base_pipe):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an int >= 1, got None") as err:
        memguard.guard(shared_base_pipe)(SECRET, num_inference_steps=None)
    assert SECRET not in str(err.value)
