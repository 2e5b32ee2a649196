import pytest

from memguard.testbed import MODEL_DIR
from memguard.testbed.models import inference_scheduler, training_scheduler
from memguard.testbed.train import TrainConfig


def test_an_unknown_prediction_type_is_refused_before_any_training():
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        TrainConfig(prediction_type="sample")


def test_epsilon_with_zero_terminal_snr_is_refused_before_any_training():
    # At SNR 0 the target would be x_T itself: the model learns nothing and sampling divides by zero.
    with pytest.raises(ValueError, match="zero_terminal_snr needs prediction_type='v_prediction'"):
        TrainConfig(zero_terminal_snr=True)
    assert TrainConfig(prediction_type="v_prediction", zero_terminal_snr=True).zero_terminal_snr


@pytest.mark.parametrize(("prediction_type", "zero_snr"), [("epsilon", False), ("v_prediction", True)])
def test_training_and_sampling_schedulers_agree_on_the_noise_schedule(prediction_type, zero_snr):
    # A model trained on v but sampled as epsilon (or on another schedule) gives noise; both must carry it.
    train, sample = training_scheduler(prediction_type, zero_snr), inference_scheduler(prediction_type, zero_snr)
    assert train.config.prediction_type == sample.config.prediction_type == prediction_type
    assert float(train.alphas_cumprod[-1]) == pytest.approx(float(sample.alphas_cumprod[-1]))


def test_zero_terminal_snr_leaves_nothing_of_the_image_in_x_T_and_sampling_starts_there():
    # SD's betas keep sqrt(alpha_bar_T) = 0.068 of the image in x_T, enough for the layout to leak.
    assert float(training_scheduler().alphas_cumprod[-1].sqrt()) > 0.05
    assert float(training_scheduler("v_prediction", zero_terminal_snr=True).alphas_cumprod[-1]) == 0.0
    sampler = inference_scheduler("v_prediction", zero_terminal_snr=True)
    sampler.set_timesteps(50)
    assert int(sampler.timesteps[0]) == 999  # "trailing" spacing; "leading" would start at 981


def test_the_default_config_samples_with_the_shipped_scheduler():
    # `python -m memguard.testbed.train` must reproduce the shipped folder, scheduler included.
    shipped = type(inference_scheduler()).from_pretrained(MODEL_DIR / "scheduler")
    default = inference_scheduler(TrainConfig().prediction_type, TrainConfig().zero_terminal_snr)
    keys = ("prediction_type", "rescale_betas_zero_snr", "timestep_spacing", "beta_schedule", "beta_end")
    assert {k: shipped.config[k] for k in keys} == {k: default.config[k] for k in keys}
