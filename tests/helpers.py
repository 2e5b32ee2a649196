"""What the tests share that is not a fixture: prompts, seeded generators, a UNet call counter, a way
to run a script as its user does, and a way to load an example's script that is not in a package."""

import importlib.util
import io
import os
import runpy
import subprocess
import sys
import traceback
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = ["a small red circle at the top left", "Living in the Light with a famous author"]
# 24 distinct benign scene captions: enough to calibrate a tiny pipeline at a 20% target
BENIGN_SCENES = [
    f"a {size} {colour} {shape} on a {bg} background"
    for size in ("small", "large")
    for colour in ("red", "blue")
    for shape in ("circle", "square", "star")
    for bg in ("white", "black")
]


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


def run_tiny(pipe, prompts=PROMPTS, steps: int = 4, **kwargs):
    """A short call on a tiny pipeline: `steps` steps, seeded generators, latent output."""
    kwargs.setdefault("num_inference_steps", steps)
    kwargs.setdefault("generator", seeded(len(prompts)))
    kwargs.setdefault("output_type", "latent")
    return pipe(prompts, **kwargs)


def initial_latents(pipe, n: int, seed: int = 0) -> torch.Tensor:
    """(n, C, H, W) starting latents of the pipeline's UNet, from `seed`."""
    shape = (n, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_script(script: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS...` (a path relative to the repository root, e.g. "benchmarks/overhead.py"), run
    from the root as a user runs it: a separate interpreter, its output captured as text. It imports this
    checkout's memguard: PYTHONPATH leads with the root, since a script's own folder, not the working
    directory, is first on its sys.path."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, script, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_script_here(script: str, *args) -> subprocess.CompletedProcess:
    """`run_script` without a new interpreter: the script runs as `__main__` in this process, from the
    repository root, with these arguments, its output captured (a benchmark script's own imports are
    then already loaded, which saves seconds a run). The working directory, sys.argv, sys.path and
    torch's thread count are restored afterwards; an exception is a return code of 1 with its traceback
    on stderr, as a separate interpreter would report it."""
    saved = os.getcwd(), list(sys.argv), list(sys.path), torch.get_num_threads()
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        os.chdir(ROOT)
        sys.argv = [script, *map(str, args)]
        # as a separate interpreter: the script's own folder first (its sibling modules), then the root
        sys.path[:0] = [str((ROOT / script).parent), str(ROOT)]
        with redirect_stdout(out), redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                if done.code is not None and not isinstance(done.code, int):
                    print(done.code, file=sys.stderr)
            except Exception:
                code = 1
                traceback.print_exc()
    finally:
        os.chdir(saved[0])
        sys.argv, sys.path[:] = saved[1], saved[2]
        torch.set_num_threads(saved[3])
    return subprocess.CompletedProcess([script, *map(str, args)], code, out.getvalue(), err.getvalue())


@contextmanager
def loaded_script(path: Path, name: str):
    """A script that is not in a package (an example's, a benchmark's), imported as module `name` for
    the duration; registered in sys.modules meanwhile, where a dataclass defined in it looks its module
    up, and with its own folder first on sys.path, as when it runs (a benchmark imports its siblings)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(Path(path).resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(folder)
        sys.modules.pop(name, None)
