"""Peak memory of a piece of work: the most allocated on the GPU, or the peak resident set on the CPU.

On CUDA the figure is ``torch.cuda.max_memory_allocated`` over the work (its peak statistics reset
first). On the CPU it is the process's peak resident set size (``VmHWM``), reset at the start through
``/proc/self/clear_refs`` where Linux allows it; where it does not (other systems, restricted
containers) the figure is the peak since the process started, which is an upper bound, and
:attr:`PeakMemory.since_start` says so.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["PeakMemory", "peak_memory", "resident_peak_mb"]

_STATUS = "/proc/self/status"


@dataclass
class PeakMemory:
    """The peak of one measurement, in MiB; ``where`` is ``"cuda"`` or ``"cpu"``."""

    mb: float = float("nan")
    where: str = "cpu"
    since_start: bool = False


def resident_peak_mb() -> float:
    """The process's peak resident set size so far, in MiB (NaN where it cannot be read)."""
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError):
        return float("nan")


def _reset_resident_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device | str | None = None) -> Iterator[PeakMemory]:
    """Measure the peak memory of the enclosed work on ``device`` (the GPU's, or the process's RSS)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = PeakMemory(where="cuda")
        try:
            yield out
        finally:
            torch.cuda.synchronize(device)
            out.mb = torch.cuda.max_memory_allocated(device) / 2**20
        return
    out = PeakMemory(where="cpu", since_start=not _reset_resident_peak())
    try:
        yield out
    finally:
        out.mb = resident_peak_mb()
