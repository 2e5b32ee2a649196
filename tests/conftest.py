"""Fixtures: tiny random-weight pipelines built offline. Shared helpers are in helpers.py."""

import os

import pytest
import torch

from memguard.testbed.tiny import tiny_pipeline

# The suite runs in two processes (pytest-xdist, `-n 2`, the README's command): each worker keeps to one
# thread, so the workers do not contend for two cores; a plain `pytest` run uses two threads.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def base_pipe():
    """A fresh tiny random-weight StableDiffusionPipeline (each test may change it)."""
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def shared_base_pipe():
    """A tiny pipeline for tests that do not change it."""
    return tiny_pipeline(seed=0)
