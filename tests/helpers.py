"""What the tests share that is not a fixture: prompts, seeded generators, a UNet call counter, and
a way to load a script that is not in a package."""

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

PROMPTS = ["a small red circle at the top left", "Living in the Light with a famous author"]


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


@contextmanager
def loaded_script(path: Path, name: str):
    """A script that is not in a package (benchmarks/, examples/), imported as module `name` for the
    duration; registered in sys.modules meanwhile, where a dataclass defined in it looks its module up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
