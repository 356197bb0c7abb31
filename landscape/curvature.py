"""The curvature of the mean loss as a linear operator, and the numerical kernels that read it.

Definitions (θ: the selected trainable parameters as one flat vector; batches b = 1..B of n_b samples,
N = Σ_b n_b; ``L_b`` the loss function's mean over batch b; z = model(x_b) the outputs):

    L(θ) = Σ_b (n_b / N) · L_b(θ)                     sample-weighted mean loss (exact for unequal batches)
    H    = ∇²_θ L = Σ_b (n_b / N) · ∇²_θ L_b           the Hessian
    G    = Σ_b (n_b / N) · J_bᵀ (∇²_z L_b) J_b         the generalized Gauss–Newton matrix, J_b = ∂z/∂θ;
                                                       positive semi-definite when the loss is convex in z
                                                       (cross-entropy, MSE)

:class:`CurvatureOperator` applies H or G to flat vectors (``matvec``) and to blocks of vectors
(``matmat``: one pass over the data for the whole block). The model is run in **eval mode** for every
product: BatchNorm then normalizes with its running statistics and Dropout is off, so the loss is a
fixed, deterministic function of θ over the given samples and the operator is one symmetric matrix,
independent of how the samples are cut into batches. (In train mode BatchNorm couples the samples of
a batch, and the "Hessian" would change with the batch composition.)

The kernels work on any object with ``size``, ``dtype``, ``device`` and ``matmat`` (see
:class:`Operator`): :func:`lanczos` (top or bottom eigenpairs, full reorthogonalization, thick restart,
convergence on Ritz residuals), the trace estimators :func:`hutchinson`, :func:`hutch_plus_plus`,
:func:`xtrace` and :func:`exact_trace`, and stochastic Lanczos quadrature :func:`slq` (all chains
advanced together, one ``matmat`` per step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn

from landscape.data import Batches, as_batches
from landscape.evaluate import LossError, LossFn, check_scalar_loss
from landscape.params import trainable_parameters

KINDS = ("hessian", "ggn")
BACKENDS = ("autograd", "autograd_batched", "func")
DEFAULT_BACKEND = "autograd"

ParamSelector = str | nn.Module | Sequence[str] | None


class NonFiniteLossError(LossError):
    """The loss is NaN or infinite at this point, so its curvature is undefined."""


# --------------------------------------------------------------------------------------------------
# Which parameters, and is the loss usable
# --------------------------------------------------------------------------------------------------


def select_parameters(model: nn.Module, params: ParamSelector = None) -> dict[str, nn.Parameter]:
    """The trainable parameters of ``model`` that the curvature is taken over, by name.

    ``params`` is None (all trainable parameters), a submodule of ``model`` (its trainable parameters),
    or one or several strings, each an exact parameter name or a name prefix on a dot boundary
    (``"layer1"`` selects ``layer1.weight`` and ``layer1.0.bias``, not ``layer10.weight``). Frozen
    parameters (``requires_grad=False``) are never included. The result keeps registration order.
    """
    trainable = trainable_parameters(model)
    if params is None:
        if not trainable:
            raise ValueError("model has no trainable parameters (every parameter has requires_grad=False).")
        return dict(trainable)
    if isinstance(params, nn.Module):
        members = {id(p) for p in params.parameters()}
        owned = {id(p) for p in model.parameters()}
        if not members or not members <= owned:
            raise ValueError("params is a module that is not a submodule of model (or has no parameters).")
        chosen = {name: p for name, p in trainable.items() if id(p) in members}
        if not chosen:
            raise ValueError("params selects a submodule whose parameters are all frozen (requires_grad=False).")
        return chosen
    patterns = [params] if isinstance(params, str) else list(params)
    if not patterns or not all(isinstance(s, str) for s in patterns):
        raise ValueError("params must be None, a submodule, or a non-empty list of parameter names/prefixes.")
    all_names = [name for name, _ in model.named_parameters()]
    chosen_names: set[str] = set()
    for pattern in patterns:
        hits = [name for name in all_names if name == pattern or name.startswith(pattern.rstrip(".") + ".")]
        if not hits:
            raise ValueError(f"params entry {pattern!r} matches no parameter name of the model.")
        chosen_names.update(hits)
    chosen = {name: p for name, p in trainable.items() if name in chosen_names}
    if not chosen:
        raise ValueError(f"params {patterns!r} selects only frozen parameters (requires_grad=False).")
    return chosen


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's ``training`` flag afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def check_mean_loss(model: nn.Module, loss_fn: LossFn, data: Batches) -> float:
    """Check the loss on ``data`` is a finite scalar mean; return the full-data loss.

    Raises :class:`LossError` when ``loss_fn`` returns a non-scalar, or a value that is not the mean over
    the batch. A sum (``reduction="sum"``) is detected on the first batch with at least two samples: a
    mean satisfies ``L(batch) = (h·L(first h) + (n-h)·L(rest)) / n`` exactly (up to rounding); a sum
    gives about twice that. Raises :class:`NonFiniteLossError` when the loss is NaN or infinite.
    Runs one forward pass over the data (plus two half-batch passes), in eval mode, without gradients.
    """
    total, n = 0.0, 0
    checked_mean = False
    with torch.no_grad(), eval_mode(model):
        for x, y in data:
            loss = check_scalar_loss(loss_fn(model(x), y))
            value = float(loss)
            size = int(x.shape[0])
            if not math.isfinite(value):
                raise NonFiniteLossError(f"the loss is {value} on a batch of {size} samples; its curvature is undefined.")
            if not checked_mean and size >= 2:
                _check_is_mean(model, loss_fn, x, y, value)
                checked_mean = True
            total += value * size
            n += size
    return total / n


def _check_is_mean(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, whole: float) -> None:
    half = int(x.shape[0]) // 2
    first = float(check_scalar_loss(loss_fn(model(x[:half]), y[:half])))
    rest = float(check_scalar_loss(loss_fn(model(x[half:]), y[half:])))
    weighted = (half * first + (x.shape[0] - half) * rest) / x.shape[0]
    # 1e-3 relative: far above float32 rounding of a batch mean, far below the factor ~2 of a sum.
    if abs(whole - weighted) > 1e-3 * max(abs(whole), abs(weighted)) + 1e-12:
        hint = " (it looks like a sum: use reduction='mean')" if abs(whole - (first + rest)) <= 1e-3 * abs(whole) else ""
        raise LossError(
            "loss_fn must return the mean loss over the batch: on a batch its value "
            f"{whole:.6g} differs from the sample-weighted mean {weighted:.6g} of its values on the two halves{hint}."
        )


# --------------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------------


class Operator(Protocol):
    """What the kernels need: a symmetric n×n operator applied to blocks of column vectors."""

    size: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor: ...


class DenseOperator:
    """An explicit symmetric matrix as an :class:`Operator` (reference computations and tests)."""

    def __init__(self, matrix: torch.Tensor | np.ndarray) -> None:
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}.")
        self.matrix = matrix
        self.size = int(matrix.shape[0])
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.n_hvp = 0

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.matmat(vector.reshape(-1, 1)).reshape(-1)

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        self.n_hvp += int(vectors.shape[1])
        return self.matrix @ vectors.to(self.device, self.dtype)


class CurvatureOperator:
    """The Hessian (``kind="hessian"``) or Gauss–Newton matrix (``kind="ggn"``) of the mean loss.

    ``data`` is any accepted data argument (see :func:`landscape.data.as_batches`). Acts on flat vectors
    over the selected trainable parameters (registration order, see
    :func:`select_parameters`), in the model's dtype and on its device. ``matmat(V)`` multiplies an
    ``[n, k]`` block in one pass over the data (in chunks of at most ``max_block`` columns, which bounds
    the memory of the batched backends; default 16 for them, unlimited for the loop). ``n_hvp`` counts vectors multiplied (a block of 8 counts 8).

    Backends (all exact; they differ in speed and memory). Each pass builds the gradient graph of a batch
    once (forward + backward with ``create_graph``) and differentiates it again for every column:
    ``"autograd"`` (default) loops over the columns on that graph; ``"autograd_batched"`` sends all
    columns through one ``torch.autograd.grad(..., is_grads_batched=True)``; ``"func"`` uses
    ``torch.func.vmap`` over forward-over-reverse ``jvp(grad)`` (it rebuilds the graph on every call).
    Measured per vector (2-core CPU, one thread, two runs; a 4.8k-parameter MLP on 1000 samples / a
    90k-parameter CNN on 512 samples):

        data, columns per call      autograd              autograd_batched     func
        one batch (cached), 8       1.4 / 179 ms          2.0 / 259–291 ms     1.8–2.3 / 368–403 ms
        four batches, 8             1.4–2.9 / 175–208 ms  2.2 / 216 ms         2.1–3.3 / 206–245 ms

    The loop is the fastest or close to it on CPU and needs the least memory (hence the default); the
    batched forms may pay off on a GPU (not measured). When the data is a single batch the gradient graph
    is kept between calls (``cache_graph=None``: cache for one batch only; True caches every batch's
    graph, which costs memory; False never caches).

    The model runs in eval mode for every product and its modes are restored afterwards; weights and
    ``.grad`` are never written. The operator describes the weights it was built at: changing them in
    place while a cached graph is alive makes autograd raise. Call :meth:`release` (or use ``with``) to
    free the cached graph.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Batches | object,
        *,
        kind: str = "hessian",
        params: ParamSelector = None,
        backend: str = DEFAULT_BACKEND,
        cache_graph: bool | None = None,
        max_block: int | None = None,
        check_loss: bool = True,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        if max_block is None:
            # the loop differentiates one column at a time on the batch's graph: no extra memory per column
            max_block = 1 << 30 if backend == "autograd" else 16
        if max_block < 1:
            raise ValueError(f"max_block must be a positive integer, got {max_block}.")
        data = data if isinstance(data, Batches) else as_batches(data)
        self.model = model
        self.loss_fn = loss_fn
        self.kind = kind
        self.backend = backend
        self.max_block = int(max_block)
        self.params = select_parameters(model, params)
        first = next(iter(self.params.values()))
        self.dtype = first.dtype
        self.device = first.device
        self.data = data.to(self.device)
        self.names = tuple(self.params)
        self.shapes = tuple(tuple(p.shape) for p in self.params.values())
        self.size = sum(p.numel() for p in self.params.values())
        self.n_hvp = 0
        self.cache_graph = len(self.data) == 1 if cache_graph is None else bool(cache_graph)
        self._graphs: dict[int, tuple[torch.Tensor, ...]] = {}
        self._batched_ok = True
        self.loss = check_mean_loss(model, loss_fn, self.data) if check_loss else float("nan")

    # -- shape and conversions ---------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def to_named(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into detached tensors keyed and shaped like the selected parameters."""
        vector = vector.reshape(-1)
        if vector.numel() != self.size:
            raise ValueError(f"vector has {vector.numel()} entries, the operator acts on {self.size}.")
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            count = math.prod(shape)
            out[name] = vector[offset : offset + count].detach().reshape(shape).clone()
            offset += count
        return out

    def from_named(self, named: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Flatten named tensors (missing names are zero) into one vector of the operator's space."""
        parts = []
        for name, param in self.params.items():
            part = named.get(name)
            parts.append(torch.zeros_like(param).reshape(-1) if part is None else part.reshape(-1).to(param))
        return torch.cat(parts).detach()

    # -- products ----------------------------------------------------------------------------------

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``H @ v`` for a flat vector (or the GGN product)."""
        return self.matmat(vector.reshape(-1, 1)).reshape(-1)

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H @ V`` for an ``[n, k]`` block, one pass over the data per ``max_block`` columns."""
        if vectors.dim() != 2 or vectors.shape[0] != self.size:
            raise ValueError(f"matmat expects an [{self.size}, k] block, got shape {tuple(vectors.shape)}.")
        vectors = vectors.detach().to(self.device, self.dtype)
        chunks = [
            self._apply(vectors[:, start : start + self.max_block])
            for start in range(0, vectors.shape[1], self.max_block)
        ]
        self.n_hvp += int(vectors.shape[1])
        return torch.cat(chunks, dim=1) if chunks else vectors.clone()

    def as_linear_operator(self) -> LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 in and out) sharing this operator's counter."""

        def apply(block: np.ndarray) -> np.ndarray:
            block = np.asarray(block, dtype=np.float64)
            flat = block.ndim == 1
            tensor = torch.from_numpy(block.reshape(self.size, -1)).to(self.device, self.dtype)
            result = self.matmat(tensor).detach().to("cpu", torch.float64).numpy()
            return result.reshape(-1) if flat else result

        return LinearOperator(
            shape=self.shape, dtype=np.float64, matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply
        )

    def release(self) -> None:
        """Free the cached gradient graphs."""
        self._graphs.clear()

    def __enter__(self) -> CurvatureOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals ---------------------------------------------------------------------------------

    def _apply(self, block: torch.Tensor) -> torch.Tensor:
        rows = block.T.contiguous()  # [k, n]: batched autograd/vmap take the batch dimension first
        total = torch.zeros_like(rows)
        n = self.data.n_samples
        with torch.enable_grad(), eval_mode(self.model):
            for index, (x, y) in enumerate(self.data):
                weight = x.shape[0] / n
                if self.backend == "func":
                    product = self._func_product(x, y, rows)
                elif self.kind == "hessian":
                    product = self._autograd_hessian(index, x, y, rows)
                else:
                    product = self._autograd_ggn(index, x, y, rows)
                total.add_(product, alpha=weight)
        return total.T

    def _loss(self, x: torch.Tensor, y: torch.Tensor, outputs: torch.Tensor | None = None) -> torch.Tensor:
        outputs = self.model(x) if outputs is None else outputs
        return check_scalar_loss(self.loss_fn(outputs, y))

    def _flat_grads(self, outputs: torch.Tensor | Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
                    grad_outputs: torch.Tensor | Sequence[torch.Tensor] | None, *, create_graph: bool = False,
                    retain_graph: bool = True, batched: bool = False) -> torch.Tensor:
        grads = torch.autograd.grad(
            outputs, list(inputs), grad_outputs=grad_outputs, create_graph=create_graph, retain_graph=retain_graph,
            allow_unused=True, materialize_grads=True, is_grads_batched=batched,
        )
        lead = 1 if batched else 0
        return torch.cat([g.reshape(*g.shape[:lead], -1) for g in grads], dim=lead)

    def _columns(self, product: Callable[[torch.Tensor, bool, bool], torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Apply ``product(rows, batched, retain)`` to every row, reusing one graph.

        ``"autograd"`` loops over the rows (the graph is retained until the last one);
        ``"autograd_batched"`` pushes all rows through one batched call and falls back to the loop if an
        operation has no batching rule.
        """
        keep = self.cache_graph
        if self.backend == "autograd_batched" and rows.shape[0] > 1 and self._batched_ok:
            try:
                return product(rows, True, keep)
            except RuntimeError:
                self._batched_ok = False  # an op without a batching rule: loop from now on
        last = rows.shape[0] - 1
        return torch.stack([product(row, False, keep or i < last) for i, row in enumerate(rows)])

    def _autograd_hessian(self, index: int, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        params = list(self.params.values())
        graph = self._graphs.get(index)
        if graph is None:
            loss = self._loss(x, y)
            graph = (self._flat_grads(loss, params, None, create_graph=True),)
            if self.cache_graph:
                self._graphs[index] = graph
        (gradient,) = graph
        if not gradient.requires_grad:  # the loss is at most linear in these parameters
            return torch.zeros_like(rows)
        return self._columns(
            lambda r, batched, retain: self._flat_grads(gradient, params, r, retain_graph=retain, batched=batched),
            rows,
        )

    def _autograd_ggn(self, index: int, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        params = list(self.params.values())
        graph = self._graphs.get(index)
        if graph is None:
            outputs = self.model(x)
            if not isinstance(outputs, torch.Tensor):
                raise TypeError("kind='ggn' needs a model whose output is one tensor.")
            loss = self._loss(x, y, outputs)
            (loss_grad,) = torch.autograd.grad(loss, outputs, create_graph=True)
            probe = torch.zeros_like(outputs, requires_grad=True)
            # Jᵀu as a (linear) function of u; differentiating it w.r.t. u in direction v gives J v.
            pullback = self._flat_grads(outputs, params, probe, create_graph=True)
            graph = (outputs, loss_grad, probe, pullback)
            if self.cache_graph:
                self._graphs[index] = graph
        outputs, loss_grad, probe, pullback = graph
        if not pullback.requires_grad or not loss_grad.requires_grad:
            return torch.zeros_like(rows)

        def product(r: torch.Tensor, batched: bool, retain: bool) -> torch.Tensor:
            (jv,) = torch.autograd.grad(pullback, probe, r, retain_graph=True, is_grads_batched=batched)
            (hjv,) = torch.autograd.grad(loss_grad, outputs, jv, retain_graph=True, is_grads_batched=batched,
                                         allow_unused=True, materialize_grads=True)
            return self._flat_grads(outputs, params, hjv, retain_graph=retain, batched=batched)

        return self._columns(product, rows)

    def _func_product(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, grad, jvp, vjp, vmap

        base = torch.cat([p.detach().reshape(-1) for p in self.params.values()])
        names, shapes = self.names, self.shapes

        def outputs_at(flat: torch.Tensor) -> torch.Tensor:
            named, offset = {}, 0
            for name, shape in zip(names, shapes):
                count = math.prod(shape)
                named[name] = flat[offset : offset + count].view(shape)
                offset += count
            return functional_call(self.model, named, (x,))

        def loss_of_outputs(out: torch.Tensor) -> torch.Tensor:
            return check_scalar_loss(self.loss_fn(out, y))

        if self.kind == "hessian":
            gradient = grad(lambda flat: loss_of_outputs(outputs_at(flat)))

            def product(v: torch.Tensor) -> torch.Tensor:
                return jvp(gradient, (base,), (v,))[1]

        else:
            out, pull = vjp(outputs_at, base)
            # reverse-over-reverse for the (symmetric) output Hessian: forward mode through some loss
            # backward formulas (mse_loss) is not supported
            _, output_hessian = vjp(grad(loss_of_outputs), out.detach())

            def product(v: torch.Tensor) -> torch.Tensor:
                jv = jvp(outputs_at, (base,), (v,))[1]
                return pull(output_hessian(jv)[0])[0]

        return vmap(product)(rows).detach()


# --------------------------------------------------------------------------------------------------
# Small helpers shared by the kernels
# --------------------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _gaussian(op: Operator, k: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(op.size, k, generator=generator, dtype=torch.float64).to(op.device, op.dtype)


def _rademacher(op: Operator, k: int, generator: torch.Generator) -> torch.Tensor:
    signs = torch.randint(0, 2, (op.size, k), generator=generator, dtype=torch.int8)
    return (signs.to(torch.float64) * 2 - 1).to(op.device, op.dtype)


def _column_dots(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a * b).sum(dim=0).to("cpu", torch.float64).numpy()


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _orthogonalize(block: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove the components of ``block`` along an orthonormal ``basis`` (twice: classical GS with
    reorthogonalization keeps the result orthogonal to working precision)."""
    if basis.shape[1] == 0:
        return block
    for _ in range(2):
        block = block - basis @ (basis.T @ block)
    return block


# --------------------------------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanczosResult:
    """Ritz pairs from :func:`lanczos`, ordered by ``which`` (LA: largest first; SA: smallest first).

    ``residuals[i] = ‖H yᵢ − θᵢ yᵢ‖`` for the unit Ritz vector yᵢ (from the Lanczos relation),
    ``n_matvec`` operator-vector products, ``n_steps`` block steps.
    """

    values: np.ndarray
    vectors: torch.Tensor | None
    residuals: np.ndarray
    n_matvec: int
    n_steps: int
    converged: bool


def lanczos(
    op: Operator,
    k: int,
    *,
    which: str = "LA",
    tol: float = 1e-5,
    max_iter: int | None = None,
    block_size: int = 1,
    max_basis: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
) -> LanczosResult:
    """The k largest (``which="LA"``) or smallest (``"SA"``) eigenvalues of a symmetric operator.

    Block Lanczos (``block_size`` vectors per step, one ``matmat`` each) with full reorthogonalization:
    the basis Q is kept orthonormal and T = QᵀHQ is formed explicitly from the products, so the Ritz
    values are exact Rayleigh–Ritz values of the current subspace. The residual of a Ritz pair
    (θ, Qy) is ``‖B y_last‖``, where B couples the last block to the next (Lanczos relation). Stops when
    every wanted residual is ``≤ tol · max(|θ|, 1e-3 · max|θ_all|)`` (relative accuracy, not demanding
    below-noise accuracy for eigenvalues 1000× smaller than the spectral radius), when the basis spans
    the whole space (exact), or after ``max_iter`` steps. When the basis reaches ``max_basis`` vectors it
    is thick-restarted on the best Ritz vectors. A breakdown (invariant subspace found) continues from
    fresh random directions. Single-vector Lanczos (``block_size=1``) finds one copy of a repeated
    eigenvalue per restart; use a block at least as large as the expected multiplicity.
    """
    n = op.size
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer between 1 and the operator size {n}, got {k}.")
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' (largest) or 'SA' (smallest), got {which!r}.")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}.")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}.")
    b = min(int(block_size), n)
    basis_cap = min(n, max(max_basis or max(3 * k + 30, 50), k + 2 * b))
    steps_cap = max_iter if max_iter is not None else math.ceil((20 * k + 200) / b)
    if steps_cap < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}.")
    generator = _generator(seed)
    block, _ = torch.linalg.qr(_gaussian(op, b, generator))
    basis = block.new_zeros(n, 0)
    projected = np.zeros((0, 0))
    n_matvec = steps = 0
    while True:
        image = op.matmat(block)
        steps += 1
        n_matvec += block.shape[1]
        cross = _to_numpy(basis.T @ image)
        diag = _to_numpy(block.T @ image)
        projected = np.block([[projected, cross], [cross.T, (diag + diag.T) / 2]])
        basis = torch.cat([basis, block], dim=1)
        image = _orthogonalize(image, basis)
        theta, ritz = np.linalg.eigh(projected)
        scale = float(np.max(np.abs(theta))) if theta.size else 0.0
        nxt, coupling = _next_block(image, basis, b, scale, op, generator)
        order = np.argsort(-theta if which == "LA" else theta, kind="stable")
        wanted = order[: min(k, len(theta))]
        last = ritz[-block.shape[1] :, wanted]
        residuals = np.linalg.norm(coupling @ last, axis=0) if coupling.size else np.zeros(len(wanted))
        floor = 1e-3 * scale
        done = basis.shape[1] >= k and bool(np.all(residuals <= tol * np.maximum(np.abs(theta[wanted]), floor)))
        exhausted = basis.shape[1] >= n or nxt.shape[1] == 0
        if done or exhausted or steps >= steps_cap:
            converged = done or exhausted
            break
        if basis.shape[1] + nxt.shape[1] > basis_cap:
            keep_count = min(max(k, (basis_cap + k) // 2), basis_cap - nxt.shape[1], basis.shape[1])
            keep = order[:keep_count]
            basis = basis @ torch.from_numpy(ritz[:, keep]).to(basis)
            projected = np.diag(theta[keep])
        block = nxt
    vectors = None
    if return_vectors:
        vectors = basis @ torch.from_numpy(ritz[:, wanted]).to(basis)
    return LanczosResult(
        values=theta[wanted].copy(), vectors=vectors, residuals=residuals, n_matvec=n_matvec, n_steps=steps,
        converged=converged,
    )


def _next_block(residual: torch.Tensor, basis: torch.Tensor, b: int, scale: float, op: Operator,
                generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Orthonormal next block X and coupling B with ``residual = X B`` (rank-revealing).

    Directions whose residual is at rounding level (an invariant subspace was found) are dropped from B
    and replaced by fresh random directions orthogonal to everything so far (coupling 0).
    """
    room = op.size - basis.shape[1]
    width = residual.shape[1]
    if room <= 0:
        return basis.new_zeros(op.size, 0), np.zeros((0, width))
    q, r = torch.linalg.qr(residual)
    u, s, vh = np.linalg.svd(_to_numpy(r))
    threshold = 100 * _eps(op.dtype) * max(scale, 1e-30)
    rank = min(int(np.sum(s > threshold)), room)
    block = q @ torch.from_numpy(u[:, :rank]).to(q)
    coupling = s[:rank, None] * vh[:rank]
    fill = min(b, room) - rank
    if fill > 0:
        fresh = _orthogonalize(_gaussian(op, fill, generator), torch.cat([basis, block], dim=1))
        fresh, _ = torch.linalg.qr(fresh)
        block = torch.cat([block, fresh], dim=1)
        coupling = np.vstack([coupling, np.zeros((fill, width))])
    return block, coupling


# --------------------------------------------------------------------------------------------------
# Trace estimators
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate, its standard error (see each estimator) and the operator products spent."""

    value: float
    stderr: float
    n_matvec: int


def exact_trace(op: Operator) -> TraceResult:
    """``tr(H) = Σᵢ eᵢᵀ H eᵢ`` from the n unit vectors (n products; exact up to rounding)."""
    total, chunk = 0.0, 64
    for start in range(0, op.size, chunk):
        stop = min(op.size, start + chunk)
        units = torch.zeros(op.size, stop - start, dtype=op.dtype, device=op.device)
        units[torch.arange(start, stop), torch.arange(stop - start)] = 1
        total += float(np.sum(np.diag(_to_numpy(op.matmat(units)[start:stop]))))
    return TraceResult(value=total, stderr=0.0, n_matvec=op.size)


# The fewest products each estimator takes: Hutchinson needs two samples for its stderr; Hutch++ two
# deflated samples after its s ≥ 1 sketch and HQ products; XTrace two test vectors.
TRACE_MIN_MATVEC: dict[str, int] = {"hutchinson": 2, "hutch++": 4, "xtrace": 4}


def _check_budget(n_matvec: int, name: str) -> None:
    minimum = TRACE_MIN_MATVEC[name]
    if not isinstance(n_matvec, (int, np.integer)) or n_matvec < minimum:
        raise ValueError(f"n_matvec must be an integer ≥ {minimum} for {name}, got {n_matvec}.")


def _quadratic_forms(op: Operator, vectors: torch.Tensor) -> np.ndarray:
    """``vᵢᵀ H vᵢ`` for every column."""
    return _column_dots(vectors, op.matmat(vectors))


def hutchinson(op: Operator, n_matvec: int, *, seed: int = 0) -> TraceResult:
    """Hutchinson's estimator: the mean of ``zᵀHz`` over Rademacher vectors z (unbiased).

    stderr = sample standard deviation of the ``zᵀHz`` / √n_matvec.
    """
    _check_budget(n_matvec, "hutchinson")
    samples = _quadratic_forms(op, _rademacher(op, n_matvec, _generator(seed)))
    return TraceResult(float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(n_matvec)), n_matvec)


def hutch_plus_plus(op: Operator, n_matvec: int, *, seed: int = 0) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): deflate the top of the spectrum, then Hutchinson.

    With s = n_matvec // 3 Rademacher sketch vectors S: Q = orth(H S) (s products), the exact part
    ``tr(QᵀHQ)`` (s products), and Hutchinson on the deflated ``(I−QQᵀ) H (I−QQᵀ)`` with the remaining
    n_matvec − 2s Rademacher vectors. Unbiased for any Q. stderr is the Hutchinson standard error of the
    deflated part (sample std / √(n_matvec − 2s)), i.e. conditional on the sketch; it is 0 when the
    deflated part vanishes (rank of H ≤ s: the estimate is then exact).
    """
    _check_budget(n_matvec, "hutch++")
    generator = _generator(seed)
    s = min(n_matvec // 3, op.size)
    rest = n_matvec - 2 * s
    sketch = op.matmat(_rademacher(op, s, generator))
    q, _ = torch.linalg.qr(sketch)
    tail = _orthogonalize(_rademacher(op, rest, generator), q)
    # HQ and the deflated test vectors in one block: one pass over the data instead of two
    both = torch.cat([q, tail], dim=1)
    forms = _column_dots(both, op.matmat(both))
    top, samples = float(np.sum(forms[:s])), forms[s:]
    # rest ≥ n_matvec/3 ≥ 2 (s ≤ n_matvec // 3), so the sample std is defined
    return TraceResult(top + float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(rest)), 2 * s + rest)


def xtrace(op: Operator, n_matvec: int, *, seed: int = 0) -> TraceResult:
    """XTrace (Epperly, Tropp & Webber 2024): the exchangeable version of Hutch++.

    With m = n_matvec // 2 Gaussian test vectors Ω and Y = HΩ = QR, each leave-one-out estimate i uses
    the basis of range(Y without column i), Qᵢ = Q(I − sᵢsᵢᵀ) with sᵢ ∝ R⁻ᵀeᵢ, and the test vector ωᵢ
    (independent of Qᵢ) for the remainder, rescaled to the expected norm of its projection:

        tᵢ = tr(QᵢᵀHQᵢ) + (n − m + 1) · uᵢᵀHuᵢ / ‖uᵢ‖²,   uᵢ = (I − QᵢQᵢᵀ) ωᵢ.

    value = mean tᵢ (2m products: HΩ and HQ); stderr = std(tᵢ) / √m, the paper's error estimate.
    When Y is rank-deficient the range of H is inside range(Q) and the value tr(QᵀHQ) is exact.
    """
    _check_budget(n_matvec, "xtrace")
    generator = _generator(seed)
    n = op.size
    m = min(n_matvec // 2, n)
    omega = _gaussian(op, m, generator)
    y = op.matmat(omega)
    q, r = torch.linalg.qr(y)
    z = op.matmat(q)
    h = _to_numpy(q.T @ z)
    h = (h + h.T) / 2
    r_np = _to_numpy(r)
    singular = np.linalg.svd(r_np, compute_uv=False)
    if m == n or singular[-1] <= 10 * m * _eps(op.dtype) * singular[0]:
        return TraceResult(float(np.trace(h)), 0.0, 2 * m)
    w = _to_numpy(q.T @ omega)  # coordinates of ωᵢ in range(Q)
    t = _to_numpy(z.T @ omega)  # column i: (HQ)ᵀωᵢ
    omega_h_omega = _column_dots(omega, y)
    omega_sq = _column_dots(omega, omega)
    s_dirs = np.linalg.solve(r_np.T, np.eye(m))
    s_dirs /= np.linalg.norm(s_dirs, axis=0, keepdims=True)
    estimates = np.empty(m)
    trace_h = float(np.trace(h))
    for i in range(m):
        s_i, w_i, t_i, r_i = s_dirs[:, i], w[:, i], t[:, i], r_np[:, i]
        c = float(s_i @ w_i)
        hs = h @ s_i
        # u = ω − Q w + c Q s;  H u = y − Z w + c Z s;  every term of uᵀHu reduced to m-dimensional products.
        quad = (
            omega_h_omega[i] - t_i @ w_i + c * (t_i @ s_i)
            - w_i @ r_i + w_i @ h @ w_i - c * (w_i @ hs)
            + c * (s_i @ r_i) - c * (hs @ w_i) + c * c * (s_i @ hs)
        )
        norm_sq = omega_sq[i] - (w_i @ w_i - c * c)
        estimates[i] = trace_h - s_i @ hs + (n - m + 1) * quad / norm_sq
    return TraceResult(float(estimates.mean()), float(estimates.std(ddof=1) / math.sqrt(m)), 2 * m)


TRACE_METHODS: dict[str, Callable[..., TraceResult]] = {
    "hutchinson": hutchinson,
    "hutch++": hutch_plus_plus,
    "xtrace": xtrace,
}


# --------------------------------------------------------------------------------------------------
# Stochastic Lanczos quadrature
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quadrature:
    """Gauss quadrature of the spectral measure seen from each of ``n_runs`` random start vectors.

    ``nodes[r]`` are the Ritz values of chain r, ``weights[r]`` the squared first components of its Ritz
    vectors (each row sums to 1). A chain that found an invariant subspace early is padded with
    zero-weight nodes.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_matvec: int


def slq(op: Operator, n_runs: int, n_steps: int, *, seed: int = 0, reorthogonalize: bool = True) -> Quadrature:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019).

    Each chain starts from a normalized Rademacher vector v and runs ``n_steps`` Lanczos steps, giving the
    tridiagonal T; with T = U diag(θ) Uᵀ, the measure Σⱼ U[0,j]² δ(t − θⱼ) approximates
    ``vᵀ δ(t − H) v``, whose expectation is the spectral density (1/n) Σᵢ δ(t − λᵢ). All chains advance
    together: one ``matmat`` of the active chains per step. Full reorthogonalization (default) keeps every
    chain's basis, ``n_runs · n_steps`` vectors of the operator's size; without it only the three-term
    recurrence is used (memory of 2 vectors per chain, spurious copies of outlying Ritz values possible).
    """
    if not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs}.")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}.")
    n = op.size
    current = _rademacher(op, n_runs, _generator(seed)) / math.sqrt(n)
    previous = torch.zeros_like(current)
    history = (
        torch.zeros(n_runs, n_steps, n, dtype=op.dtype, device=op.device) if reorthogonalize else None
    )
    alphas = np.zeros((n_runs, n_steps))
    betas = np.zeros((n_runs, n_steps))
    lengths = np.full(n_runs, n_steps)
    active = np.arange(n_runs)
    n_matvec = 0
    scale = 0.0
    for step in range(n_steps):
        idx = torch.from_numpy(active).to(op.device)
        v = current[:, idx]
        w = op.matmat(v)
        n_matvec += len(active)
        alpha = _column_dots(v, w)
        alphas[active, step] = alpha
        if history is not None:
            history[idx, step] = v.T
            # [chains, steps so far, n]; a view when every chain is still running
            past = history[:, : step + 1] if active.size == n_runs else history[idx, : step + 1]
            for _ in range(2):
                coeffs = torch.einsum("cjn,nc->cj", past, w)
                w = w - torch.einsum("cjn,cj->nc", past, coeffs)
        else:
            w = w - v * torch.from_numpy(alpha).to(w) - previous[:, idx] * torch.from_numpy(
                betas[active, step - 1] if step else np.zeros(len(active))).to(w)
        if step == n_steps - 1:
            break
        beta = np.sqrt(np.maximum(_column_dots(w, w), 0.0))
        scale = max(scale, float(np.max(np.abs(alpha))), float(np.max(beta)))
        alive = beta > 100 * _eps(op.dtype) * max(scale, 1e-30)
        betas[active, step] = np.where(alive, beta, 0.0)
        lengths[active[~alive]] = step + 1
        previous[:, idx] = v
        current[:, idx] = w / torch.from_numpy(np.where(alive, beta, 1.0)).to(w)
        active = active[alive]
        if active.size == 0:
            break
    nodes = np.zeros((n_runs, n_steps))
    weights = np.zeros((n_runs, n_steps))
    for run in range(n_runs):
        size = int(lengths[run])
        tri = np.diag(alphas[run, :size]) + np.diag(betas[run, : size - 1], 1) + np.diag(betas[run, : size - 1], -1)
        theta, vecs = np.linalg.eigh(tri)
        nodes[run, :size], weights[run, :size] = theta, vecs[0] ** 2
        nodes[run, size:] = theta[0]
    return Quadrature(nodes=nodes, weights=weights, n_matvec=n_matvec)
