"""Fixtures: tiny random-weight pipelines built offline. Shared helpers are in helpers.py."""

import pytest
import torch

from memguard.testbed.tiny import tiny_pipeline

torch.set_num_threads(2)


@pytest.fixture
def base_pipe():
    """A fresh tiny random-weight StableDiffusionPipeline (each test may change it)."""
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def shared_base_pipe():
    """A tiny pipeline for tests that do not change it."""
    return tiny_pipeline(seed=0)
