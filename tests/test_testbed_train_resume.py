"""A training run interrupted after a checkpoint and resumed writes the weights an uninterrupted run writes."""

import pytest
import torch
from safetensors.torch import load_file

from memguard.testbed import train as training
from memguard.testbed.models import ModelSizes
from memguard.testbed.train import STATE_FILE, TrainConfig, train

TINY = TrainConfig(
    n_broad=40,
    sizes=ModelSizes(vae_channels=(16, 16), unet_channels=(16, 32, 32), text_layers=1, text_intermediate=16),
    batch=4,
    vae_steps=2,
    steps=4,
    warmup=1,
    checkpoint_every=2,
)


@pytest.fixture
def no_final_steps(monkeypatch):
    """The truth and the 1,000-image calibration after training are not what is tested here."""
    monkeypatch.setattr(training, "write_truth", lambda folder: None)
    monkeypatch.setattr(training, "calibrate_testbed", lambda folder: None)


def _weights(folder):
    unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    text = load_file(str(folder / "text_encoder" / "model.safetensors"))
    return {**unet, **{"text." + name: tensor for name, tensor in text.items()}}


def _interrupted_run(monkeypatch, folder):
    """Train TINY into `folder` until it stops right after its first checkpoint (as a killed run would)."""
    real_lr = training._lr

    def interrupt_after_the_checkpoint(config, step):
        if step == TINY.checkpoint_every:
            raise KeyboardInterrupt
        return real_lr(config, step)

    with monkeypatch.context() as patch:
        patch.setattr(training, "_lr", interrupt_after_the_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            train(TINY, folder)


def _assert_same_weights(expected_folder, got_folder):
    expected, got = _weights(expected_folder), _weights(got_folder)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_a_resumed_run_writes_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, no_final_steps):
    torch.set_num_threads(1)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(TINY, whole)
    assert not (whole / STATE_FILE).exists()  # removed once the weights are final
    _interrupted_run(monkeypatch, resumed)
    assert (resumed / STATE_FILE).is_file()
    train(TINY, resumed, resume=True)
    _assert_same_weights(whole, resumed)
    assert not (resumed / STATE_FILE).exists()


def test_resuming_refuses_other_options_and_a_folder_without_a_state(tmp_path, monkeypatch, no_final_steps):
    torch.set_num_threads(1)
    with pytest.raises(FileNotFoundError, match=STATE_FILE):
        train(TINY, tmp_path / "nothing", resume=True)
    _interrupted_run(monkeypatch, tmp_path / "run")
    with pytest.raises(ValueError, match=r"lr: 0\.001 there, 0\.002 here"):
        train(TrainConfig(**{**TINY.__dict__, "lr": 2e-3}), tmp_path / "run", resume=True)
    # how often checkpoints are written does not change the weights
    train(TrainConfig(**{**TINY.__dict__, "checkpoint_every": 3}), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "unet").is_dir()


def test_reusing_a_vae_trained_with_the_same_seed_gives_the_weights_of_a_run_that_trains_it(tmp_path, no_final_steps):
    torch.set_num_threads(1)
    train(TINY, tmp_path / "scratch")
    train(TrainConfig(**{**TINY.__dict__, "vae_from": tmp_path / "scratch"}), tmp_path / "reused")
    _assert_same_weights(tmp_path / "scratch", tmp_path / "reused")
