"""Which per-batch gradient graphs the curvature operator keeps alive between products, from a memory estimate.

A Hessian-vector product on a batch needs that batch's gradient graph (the gradient built with
``create_graph=True``). Building it costs a forward and a backward pass; differentiating it again (the
product) costs about two gradients. Keeping every batch's graph alive between products therefore cuts a
product over several batches from about three gradients' work to about two, at the price of holding
the saved activations of every batch at once.

The operator measures the first graph it builds (:class:`GraphMeter`), scales that to every batch by
its number of samples, and keeps the graphs of the leading batches whose estimates fit a budget
(:func:`graphs_to_keep`): by default :data:`CACHE_FRACTION` of the device's free memory
(:func:`free_memory`), or a number of bytes the caller gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import torch

__all__ = ["CACHE_FRACTION", "GraphCache", "GraphMeter", "free_memory", "graphs_to_keep"]

Graph = tuple[torch.Tensor, ...]

# Share of the free memory that the cached graphs may take by default: half leaves the other half for the
# Krylov basis, the products' temporaries and whatever else runs beside the operator.
CACHE_FRACTION = 0.5


def free_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: on CUDA the driver's free memory plus what
    PyTorch's caching allocator holds unused; on the CPU the kernel's ``MemAvailable`` (or free pages)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def _storage_key(tensor: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse, nested or meta tensors have no plain storage
        return None


class GraphMeter:
    """Measures the memory a gradient graph built inside it keeps alive.

    Counts every distinct storage that autograd saves for backward while the context is active
    (forward and ``create_graph`` backward alike), except those of ``exclude`` (the model's parameters
    and buffers, which exist anyway), plus ``extra`` bytes for the graph's outputs. On CUDA the growth
    of allocated memory across the block is measured too, and the larger of the two is taken.
    """

    def __init__(self, exclude: Iterable[torch.Tensor], device: torch.device, extra: int = 0) -> None:
        self._skip = {key[0] for key in map(_storage_key, exclude) if key is not None}
        self._seen: set[int] = set()
        self._device = device
        self._saved = 0
        self._extra = int(extra)
        self._cuda_before = 0
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key is not None and key[0] and key[0] not in self._skip and key[0] not in self._seen:
            self._seen.add(key[0])
            self._saved += key[1]
        return tensor

    def __enter__(self) -> GraphMeter:
        if self._device.type == "cuda":
            self._cuda_before = torch.cuda.memory_allocated(self._device)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self.bytes = self._saved + self._extra
        if self._device.type == "cuda":
            self.bytes = max(self.bytes, torch.cuda.memory_allocated(self._device) - self._cuda_before)


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def graphs_to_keep(first_bytes: int, first_samples: int, samples: Sequence[int], budget: int) -> int:
    """How many leading batches' graphs fit ``budget`` bytes, each estimated from the first graph measured
    (``first_bytes`` for ``first_samples`` samples) in proportion to its number of samples."""
    per_sample = first_bytes / max(first_samples, 1)
    total, count = 0.0, 0
    for n in samples:
        total += per_sample * max(n, 1)
        if total > budget:
            break
        count += 1
    return count


class GraphCache:
    """The gradient graphs kept per batch index, and the decision of how many to keep.

    ``mode``: True keeps every batch's graph, False none, None decides from the first graph measured
    (a single batch's graph is always kept). ``samples``: each batch's number of samples; ``budget``:
    bytes the kept graphs may take (None: :data:`CACHE_FRACTION` of the free memory of ``device``);
    ``exclude``: tensors that exist anyway (parameters, buffers); ``extra``: bytes of each graph's
    outputs, added to the measurement.
    """

    def __init__(self, mode: bool | None, budget: int | None, samples: Sequence[int], device: torch.device,
                 exclude: Sequence[torch.Tensor], extra: int) -> None:
        if mode is not None and not isinstance(mode, bool):
            raise ValueError(f"cache_graph must be True, False or None (decide from memory), got {mode!r}.")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ValueError(f"cache_budget must be a number of bytes (an integer ≥ 0) or None, got {budget!r}.")
        self.samples = [max(int(n), 1) for n in samples]
        self.budget, self.device, self.exclude, self.extra = budget, device, exclude, int(extra)
        self.graphs: dict[int, Graph] = {}
        self.estimate: int | None = None  # bytes of every batch's graph, once the first one is measured
        self.kept: int | None = None  # batches [0, kept) keep their graphs
        if mode is not None or len(self.samples) == 1:
            self.kept = len(self.samples) if mode is not False else 0

    def get(self, index: int, build: Callable[[], Graph]) -> tuple[Graph, bool]:
        """Batch ``index``'s graph (cached, or made by ``build``) and whether it stays cached."""
        graph = self.graphs.get(index)
        if graph is not None:
            return graph, True
        if self.estimate is None:
            with GraphMeter(self.exclude, self.device, self.extra) as meter:
                graph = build()
            self._decide(meter.bytes, self.samples[index])
        else:
            graph = build()
        keep = index < (self.kept or 0)
        if keep:
            self.graphs[index] = graph
        return graph, keep

    def _decide(self, first_bytes: int, first_samples: int) -> None:
        self.estimate = int(first_bytes * sum(self.samples) / first_samples)
        if self.kept is None:
            budget = self.budget
            if budget is None:  # the first graph is alive: its bytes are no longer free
                budget = int(CACHE_FRACTION * (free_memory(self.device) + first_bytes))
            self.kept = graphs_to_keep(first_bytes, first_samples, self.samples, budget)
