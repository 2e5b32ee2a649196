import pytest

from memguard.testbed import MODEL_DIR
from memguard.testbed.models import inference_scheduler, training_scheduler
from memguard.testbed.train import TrainConfig


def test_an_unknown_prediction_type_is_refused_before_any_training():
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        TrainConfig(prediction_type="sample")


def test_epsilon_with_zero_terminal_snr_is_refused_before_any_training():
    # At SNR 0 the target would be x_T itself: the model learns nothing and sampling divides by zero.
    with pytest.raises(ValueError, match="needs prediction_type='v_prediction'"):
        TrainConfig(prediction_type="epsilon", terminal_signal=0.0)
    assert TrainConfig(prediction_type="v_prediction", terminal_signal=0.0).terminal_signal == 0.0


@pytest.mark.parametrize("terminal_signal", [-0.1, 1.0, 1.5])
def test_a_terminal_signal_outside_0_to_1_is_refused(terminal_signal):
    with pytest.raises(ValueError, match=r"terminal_signal must be in \[0, 1\)"):
        TrainConfig(prediction_type="v_prediction", terminal_signal=terminal_signal)
    with pytest.raises(ValueError, match=r"terminal_signal must be in \[0, 1\)"):
        training_scheduler("v_prediction", terminal_signal)


@pytest.mark.parametrize(
    ("prediction_type", "terminal_signal"), [("epsilon", None), ("v_prediction", 0.0), ("v_prediction", 0.02)]
)
def test_training_and_sampling_schedulers_agree_on_the_noise_schedule(prediction_type, terminal_signal):
    # A model trained on v but sampled as epsilon (or on another schedule) gives noise; both must carry it.
    train = training_scheduler(prediction_type, terminal_signal)
    sample = inference_scheduler(prediction_type, terminal_signal)
    assert train.config.prediction_type == sample.config.prediction_type == prediction_type
    assert train.alphas_cumprod.numpy() == pytest.approx(sample.alphas_cumprod.numpy())


@pytest.mark.parametrize("terminal_signal", [0.0, 0.02, 0.05])
def test_the_terminal_signal_is_what_is_left_of_the_image_in_x_T_and_sampling_starts_there(terminal_signal):
    # SD's betas keep sqrt(alpha_bar_T) = 0.068 of the image in x_T, enough for the layout to leak.
    sd = training_scheduler()
    assert float(sd.alphas_cumprod[-1].sqrt()) == pytest.approx(0.068, abs=0.001)
    rescaled = training_scheduler("v_prediction", terminal_signal)
    assert float(rescaled.alphas_cumprod[-1].sqrt()) == pytest.approx(terminal_signal, abs=1e-3)
    # Only the end moves: the first step keeps SD's signal, and the signal still falls at every step.
    assert float(rescaled.alphas_cumprod[0]) == pytest.approx(float(sd.alphas_cumprod[0]), abs=1e-6)
    assert bool((rescaled.alphas_cumprod[1:] < rescaled.alphas_cumprod[:-1]).all())
    sampler = inference_scheduler("v_prediction", terminal_signal)
    sampler.set_timesteps(50)
    assert int(sampler.timesteps[0]) == 999  # "trailing" spacing; "leading" would start at 981


def test_a_rescaled_schedule_survives_save_and_load(tmp_path):
    # The pipeline folder must carry the custom betas, or a user's from_pretrained samples on SD's.
    inference_scheduler("v_prediction", 0.02).save_pretrained(tmp_path)
    loaded = type(inference_scheduler()).from_pretrained(tmp_path)
    assert float(loaded.alphas_cumprod[-1].sqrt()) == pytest.approx(0.02, abs=1e-3)
    assert loaded.config.timestep_spacing == "trailing"


def test_the_default_config_samples_with_the_shipped_scheduler():
    # `python -m memguard.testbed.train` must reproduce the shipped folder, scheduler included.
    shipped = type(inference_scheduler()).from_pretrained(MODEL_DIR / "scheduler")
    default = inference_scheduler(TrainConfig().prediction_type, TrainConfig().terminal_signal)
    keys = ("prediction_type", "rescale_betas_zero_snr", "timestep_spacing")
    assert {k: shipped.config[k] for k in keys} == {k: default.config[k] for k in keys}
    assert shipped.alphas_cumprod.numpy() == pytest.approx(default.alphas_cumprod.numpy())


@pytest.fixture(scope="module")
def small_training_sets():
    from memguard.testbed.data import build_training_set

    return build_training_set(0, 200), build_training_set(0, 200, duplicate_caption_dropout=0.0)


def _draws(training_set, batches: int = 40):
    import numpy as np

    rng = np.random.default_rng(5)
    return [training_set.sample(rng, 64) for _ in range(batches)]


def _emptied(training_set) -> list[bool]:
    """For every sample that lost its caption: was it a duplicated image?"""
    return [
        bool(training_set.duplicated[i])
        for index, captions in _draws(training_set)
        for i, c in zip(index, captions, strict=True)
        if c == ""
    ]


def test_by_default_duplicated_images_lose_their_caption_like_any_other(small_training_sets):
    # The earlier (epsilon) weights were trained so: 33% of their prompt-free generations copied a duplicated image.
    default, _ = small_training_sets
    assert default.duplicated.sum() > 0 and not default.duplicated.all()
    emptied = _emptied(default)
    assert any(emptied) and not all(emptied)


def test_a_duplicate_caption_dropout_of_zero_keeps_every_duplicated_caption(small_training_sets):
    default, kept = small_training_sets
    emptied = _emptied(kept)
    assert emptied and not any(emptied)  # dropout still happens, never on a duplicated image
    # The option changes captions only: the first batch draws the same images.
    assert (_draws(default, 1)[0][0] == _draws(kept, 1)[0][0]).all()


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_duplicate_caption_dropout_outside_0_to_1_is_refused(rate):
    with pytest.raises(ValueError, match=r"duplicate_caption_dropout must be in \[0, 1\]"):
        TrainConfig(duplicate_caption_dropout=rate)


@pytest.fixture
def parsed(monkeypatch, tmp_path):
    """The TrainConfig that `python -m memguard.testbed.train --out DIR *args` would train (nothing trains)."""
    from memguard.testbed import train as train_module

    seen, resumed = [], []

    def record(config, out, resume):
        seen.append(config)
        resumed.append(resume)

    monkeypatch.setattr(train_module, "train", record)

    def parse(*args: str) -> TrainConfig:
        monkeypatch.setattr("sys.argv", ["train", "--out", str(tmp_path), *args])
        train_module.main()
        parse.resume = resumed[-1]
        return seen[-1]

    return parse


def test_the_command_line_resumes_only_when_asked(parsed):
    parsed()
    assert parsed.resume is False
    parsed("--resume", "--checkpoint-every", "250")
    assert parsed.resume is True


def test_the_command_line_sets_the_duplicated_images_caption_dropout(parsed):
    assert parsed().duplicate_caption_dropout == 0.02
    assert parsed("--duplicate-caption-dropout", "0.1").duplicate_caption_dropout == 0.1
    assert parsed("--duplicate-caption-dropout", "none").duplicate_caption_dropout is None


def test_the_command_line_trains_the_shipped_recipe_by_default_and_takes_none_for_sds_betas(parsed):
    default = parsed()
    assert (default.prediction_type, default.terminal_signal) == ("v_prediction", 0.02)
    sd = parsed("--prediction-type", "epsilon", "--terminal-signal", "None")
    assert (sd.prediction_type, sd.terminal_signal) == ("epsilon", None)
    with pytest.raises(SystemExit):
        parsed("--terminal-signal", "low")


def test_the_command_line_continues_from_a_folder_with_its_own_schedule(parsed, tmp_path):
    config = parsed(
        *("--init-from", str(tmp_path), "--vae-steps", "300", "--vae-lr", "2e-4", "--steps", "1200"),
        *("--lr", "3e-4", "--final-lr", "1e-4", "--warmup", "50"),
    )
    assert config.init_from == tmp_path and (config.vae_steps, config.vae_lr) == (300, 2e-4)
    assert (config.steps, config.lr, config.final_lr, config.warmup) == (1200, 3e-4, 1e-4, 50)
    assert parsed().init_from is None  # a full training from seeds by default
    with pytest.raises(ValueError, match="--init-from or --vae-from, not both"):
        TrainConfig(init_from=tmp_path, vae_from=tmp_path)
