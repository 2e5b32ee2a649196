import pytest
import torch

from memguard.testbed.tiny import tiny_pipeline

torch.set_num_threads(2)

PROMPTS = ["a small red circle at the top left", "Living in the Light with a famous author"]


@pytest.fixture
def base_pipe():
    """A fresh tiny random-weight StableDiffusionPipeline (each test may change it)."""
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def shared_base_pipe():
    """A tiny pipeline for tests that do not change it."""
    return tiny_pipeline(seed=0)


def seeded(n: int = 1, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]


class UNetCallCounter:
    """Counts UNet forward calls (to prove early stops and zero extra evaluations)."""

    def __init__(self, unet):
        self.calls = 0
        self.batches: list[int] = []
        self._handle = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1
        self.batches.append(args[0].shape[0])

    def remove(self):
        self._handle.remove()
