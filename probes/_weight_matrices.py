"""Find a model's weight matrices and compute their singular values, batched by shape, in float64.

What counts as a weight matrix (one row of the spectra table each):

* ``nn.Linear`` (and its subclasses, e.g. ``nn.MultiheadAttention.out_proj``): the ``(out, in)`` weight.
* Convolutions (``nn.Conv1d/2d/3d`` and the transposed ones): a kernel ``(out, in, *k)`` is, with
  ``conv="slices"`` (the default, as WeightWatcher does), the ``prod(k)`` matrices ``(out, in)`` of each
  kernel position, whose eigenvalues are pooled into one ESD; with ``conv="reshape"`` it is the single
  matrix ``(out, in·prod(k))`` that the convolution applies to an unfolded patch.
* ``nn.MultiheadAttention``: the packed ``in_proj_weight (3E, E)`` is three matrices, the query, key and
  value projections (rows named ``"{layer}.q"``, ``".k"``, ``".v"``); separate ``q/k/v_proj_weight`` the same.
* Hugging Face ``Conv1D`` (GPT-2 style attention and MLP): the ``(in, out)`` weight.
* ``nn.Embedding`` / ``nn.EmbeddingBag`` when ``embeddings=True``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from landscape.krylov._linalg import single_threaded

CONV_MODES = ("slices", "reshape")
SOLVERS = ("svdvals", "gram")
_BATCH_ELEMENTS = 1 << 25  # entries per batched SVD call (256 MiB in float64)
_TINY_SIDE = 256  # Gram matrices up to this side are solved on one BLAS thread,
_TINY_PRODUCT = 1 << 24  # and formed on one when their product takes at most this many multiply-adds


@dataclass
class WeightMatrix:
    """One weight matrix (or the stack of a conv kernel's slices) of a model.

    ``stack`` has shape ``(B, rows, cols)``: ``B = 1`` except for pooled conv slices. ``n ≥ m`` are the
    larger and smaller dimension of each matrix; the ESD has ``B·m`` eigenvalues.
    """

    layer: str
    name: str
    kind: str
    stack: torch.Tensor
    parameter: str

    @property
    def n(self) -> int:
        return max(int(self.stack.shape[1]), int(self.stack.shape[2]))

    @property
    def m(self) -> int:
        return min(int(self.stack.shape[1]), int(self.stack.shape[2]))

    @property
    def count(self) -> int:
        return int(self.stack.shape[0])

    @property
    def shape(self) -> str:
        rows, cols = int(self.stack.shape[1]), int(self.stack.shape[2])
        return f"{rows}x{cols}" if self.count == 1 else f"{self.count}x{rows}x{cols}"


def _is_hf_conv1d(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(weight, torch.Tensor) \
        and weight.dim() == 2


def _usable(weight: object) -> bool:
    return isinstance(weight, torch.Tensor) and not isinstance(weight, nn.parameter.UninitializedParameter) \
        and weight.dim() >= 2 and weight.numel() > 0


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _row_name(layer: str) -> str:
    return layer if layer else "model"


def _conv_stack(weight: torch.Tensor, conv: str) -> torch.Tensor:
    out, inp = int(weight.shape[0]), int(weight.shape[1])
    if conv == "reshape":
        return weight.reshape(1, out, -1)
    positions = int(math.prod(weight.shape[2:]))
    return weight.reshape(out, inp, positions).permute(2, 0, 1)


def weight_matrices(model: nn.Module, *, conv: str = "slices", embeddings: bool = False) -> Iterator[WeightMatrix]:
    """Every weight matrix of ``model``, in ``named_modules()`` order (detached, on the model's device)."""
    if conv not in CONV_MODES:
        raise ValueError(f"conv must be one of {', '.join(map(repr, CONV_MODES))}, got {conv!r}.")
    for layer, module in model.named_modules():
        name = _row_name(layer)
        if isinstance(module, nn.MultiheadAttention):
            if module._qkv_same_embed_dim and _usable(module.in_proj_weight):
                parts = module.in_proj_weight.detach().chunk(3, dim=0)
                for tag, part in zip("qkv", parts):
                    yield WeightMatrix(layer, f"{name}.{tag}", "attention", part.unsqueeze(0),
                                       _join(layer, "in_proj_weight"))
            else:
                for tag in "qkv":
                    weight = getattr(module, f"{tag}_proj_weight", None)
                    if _usable(weight):
                        yield WeightMatrix(layer, f"{name}.{tag}", "attention", weight.detach().unsqueeze(0),
                                           _join(layer, f"{tag}_proj_weight"))
            continue
        weight = getattr(module, "weight", None)
        if not _usable(weight):
            continue
        weight = weight.detach()
        if isinstance(module, nn.Linear):
            yield WeightMatrix(layer, name, "linear", weight.reshape(1, *weight.shape), _join(layer, "weight"))
        elif isinstance(module, nn.modules.conv._ConvNd):
            kind = f"conv{weight.dim() - 2}d"
            yield WeightMatrix(layer, name, kind, _conv_stack(weight, conv), _join(layer, "weight"))
        elif _is_hf_conv1d(module):
            yield WeightMatrix(layer, name, "conv1d_hf", weight.unsqueeze(0), _join(layer, "weight"))
        elif embeddings and isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            yield WeightMatrix(layer, name, "embedding", weight.unsqueeze(0), _join(layer, "weight"))


def compute_device(device: torch.device | str | None, matrices: list[WeightMatrix]) -> torch.device:
    """Where the SVDs run: the given device, else the weights' own; MPS has no float64, so it falls back to CPU."""
    chosen = torch.device(device) if device is not None else (matrices[0].stack.device if matrices else
                                                              torch.device("cpu"))
    return torch.device("cpu") if chosen.type == "mps" else chosen


def _host_array(part: torch.Tensor) -> np.ndarray:
    """A tensor's entries as a CPU numpy array (a view where possible; bfloat16, which numpy lacks, as float32)."""
    part = part.detach().cpu()
    return (part.float() if part.dtype == torch.bfloat16 else part).numpy()


def _joined_host(parts: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    """One ``(B, n, m)`` numpy batch in ``dtype``, converted by numpy: torch's own conversion of a large
    tensor starts its OpenMP workers, which then contend with the BLAS threads of the solve that follows.
    A lone part keeps its strides (a transposed weight stays a view, which BLAS reads as it is)."""
    target = torch.empty(0, dtype=dtype).numpy().dtype
    arrays = [_host_array(p) for p in parts]
    return arrays[0].astype(target, copy=False) if len(arrays) == 1 else np.concatenate(arrays, dtype=target)


def _gram_eigenvalues_host(array: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of ``WᵀW`` for a ``(B, n, m)`` numpy batch, through numpy's BLAS and LAPACK.

    numpy turns ``a.T @ a`` into a symmetric rank-k update (half the multiply-adds of a general product)
    and its ``eigvalsh`` takes a whole stack in one call; both beat the same steps through torch on a CPU.
    Small products and Gram matrices of at most ``_TINY_SIDE`` columns run on one BLAS thread: for them
    waking threads costs more than the work.
    """
    count, rows, cols = array.shape
    tiny = cols <= _TINY_SIDE
    with single_threaded() if tiny and rows * cols * cols <= _TINY_PRODUCT else contextlib.nullcontext():
        gram = array[0].T @ array[0] if count == 1 else np.matmul(array.transpose(0, 2, 1), array)
    with single_threaded() if tiny else contextlib.nullcontext():
        values = np.linalg.eigvalsh(gram)
    return values.reshape(count, cols)


def _solve_host(array: np.ndarray, solver: str) -> torch.Tensor:
    """Singular values (descending) of a CPU ``(B, n, m)`` batch of tall matrices."""
    if solver == "svdvals":
        return torch.linalg.svdvals(torch.from_numpy(array))
    values = np.sqrt(np.clip(_gram_eigenvalues_host(array), 0.0, None))
    return torch.from_numpy(values[:, ::-1].copy())  # a copy: torch takes no negative strides


def _solve(batch: torch.Tensor, solver: str) -> torch.Tensor:
    """Singular values (descending) of a ``(B, n, m)`` batch of tall matrices on an accelerator."""
    if solver == "svdvals":
        return torch.linalg.svdvals(batch)
    values = torch.linalg.eigvalsh(batch.transpose(1, 2) @ batch)  # (B, m, m), in the batch's dtype
    return values.clamp_min(0.0).sqrt().flip(-1)


def singular_values(stacks: list[torch.Tensor], *, device: torch.device, dtype: torch.dtype = torch.float64,
                    solver: str = "gram") -> list[torch.Tensor]:
    """Singular values of each ``(B, rows, cols)`` stack, as ``(B, min(rows, cols))`` tensors.

    Stacks of the same matrix shape (up to transposition) are concatenated and sent to the solver together
    (in batches of at most ``2**25`` entries), so a transformer's many equal-shaped projections cost a few
    calls. ``solver="gram"`` (the default) takes the eigenvalues of ``WᵀW`` in float64 (numpy's BLAS and
    LAPACK on a CPU, ``torch.linalg.eigvalsh`` elsewhere): the same ``σ²`` up to ``~1e-16·σ_max²``
    absolute, which only blurs eigenvalues already below the zero threshold, and 2–5× faster than an SVD
    on a CPU. ``solver="svdvals"`` is ``torch.linalg.svdvals``, relatively accurate for every ``σ``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}.")
    # LAPACK reduces a tall matrix by QR first, so every matrix is sent tall (σ(Wᵀ) = σ(W)): several times
    # faster than a wide one of the same size.
    stacks = [s.transpose(1, 2) if int(s.shape[1]) < int(s.shape[2]) else s for s in stacks]
    results: list[torch.Tensor | None] = [None] * len(stacks)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, stack in enumerate(stacks):
        groups.setdefault((int(stack.shape[1]), int(stack.shape[2])), []).append(index)
    for (rows, cols), members in groups.items():
        per_batch = max(1, _BATCH_ELEMENTS // (rows * cols))
        parts = [stacks[i][s : s + per_batch] for i in members for s in range(0, int(stacks[i].shape[0]), per_batch)]
        batches: list[list[torch.Tensor]] = [[]]
        filled = 0
        for part in parts:  # consecutive parts packed into batches of at most per_batch matrices
            if batches[-1] and filled + int(part.shape[0]) > per_batch:
                batches.append([])
                filled = 0
            batches[-1].append(part)
            filled += int(part.shape[0])
        if device.type == "cpu":
            pieces = [_solve_host(_joined_host(batch, dtype), solver) for batch in batches]
        else:
            pieces = [_solve(_joined(batch, device, dtype), solver).cpu() for batch in batches]
        values = torch.cat(pieces)
        offset = 0
        for index in members:
            count = int(stacks[index].shape[0])
            results[index] = values[offset : offset + count]
            offset += count
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _joined(parts: list[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One ``(B, n, m)`` batch on ``device`` in ``dtype``. A lone part keeps its strides: a transposed weight
    stays a view, which the solvers read as it is (copying it to row-major order costs more than the Gram)."""
    if len(parts) == 1:
        return parts[0].to(device=device, dtype=dtype)
    return torch.cat([p.to(device=device, dtype=dtype) for p in parts])


def permuted(stack: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The same entries in a random order over the whole stack (every slice of a conv kernel together),
    as a float64 CPU tensor.

    Permuting destroys all correlations between entries and keeps their distribution, so the result's
    ESD is the Marchenko–Pastur law of that entry variance unless single entries are large (a
    correlation trap) or the mean is far from zero. The float64 copy the solver needs anyway is shuffled
    in place (Fisher–Yates): half the memory traffic of gathering through a permutation index.
    """
    flat = np.array(_host_array(stack), dtype=np.float64, order="C").reshape(-1)  # a copy, in row-major order
    rng.shuffle(flat)
    return torch.from_numpy(flat.reshape(tuple(stack.shape)))
