"""Peak memory of one call (a pipeline call, or any code), measured around it: the benchmarks compare
guarded and unguarded calls with it (benchmarks/overhead.py)."""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import torch


class PeakMemory:
    """Peak memory of one call, measured around (not inside) the timed window.

    CUDA: `reset_peak_memory_stats` before the call, `max_memory_allocated` after (tensors allocated by
    torch on the device; the caching allocator's reserve is not counted).

    CPU: `tracemalloc` does not see torch's allocations and `ru_maxrss` only ever grows, so neither tells
    one call's peak. On Linux, writing "5" to /proc/self/clear_refs resets the process's resident-set
    high-water mark (VmHWM); the call's peak is then VmHWM after the call, and its increase the peak minus
    the resident set (VmRSS) just before the call. Exact (no sampling), and cheap enough to do on every
    call. Where that file cannot be written (other systems, restricted /proc), the fallback is
    `ru_maxrss`: the process-wide peak since start, the same for every later call and unable to separate
    guarded from unguarded; it is recorded as such (`delta_mib` None).
    """

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if self.cuda:
            self.method = "torch.cuda.max_memory_allocated (reset before each call)"
        elif self._reset_hwm():
            self.method = "Linux VmHWM, reset before each call via /proc/self/clear_refs; delta = peak - VmRSS before"
        else:
            self.method = "ru_maxrss: process-wide peak since start (monotone; cannot separate calls)"
        self.baseline: float | None = None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _proc_status_mib("VmHWM") is not None
        except OSError:
            return False

    @property
    def per_call(self) -> bool:
        return not self.method.startswith("ru_maxrss")

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.baseline = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        elif self.per_call:
            self._reset_hwm()
            self.baseline = _proc_status_mib("VmRSS")

    def stop(self) -> tuple[float, float | None]:
        """(peak MiB, increase over the memory in use just before the call, MiB or None)."""
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        elif self.per_call:
            peak = _proc_status_mib("VmHWM")
        else:  # KiB on Linux, bytes on macOS
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
            return peak, None
        return peak, peak - self.baseline


def _proc_status_mib(field: str) -> float | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None
