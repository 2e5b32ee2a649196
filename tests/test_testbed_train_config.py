import pytest

from memguard.testbed.models import inference_scheduler, training_scheduler
from memguard.testbed.train import TrainConfig


def test_an_unknown_prediction_type_is_refused_before_any_training():
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        TrainConfig(prediction_type="sample")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_and_sampling_schedulers_agree_on_the_prediction_type(prediction_type):
    # A model trained on v but sampled as epsilon (or the reverse) gives noise; both must carry it.
    assert training_scheduler(prediction_type).config.prediction_type == prediction_type
    assert inference_scheduler(prediction_type).config.prediction_type == prediction_type
