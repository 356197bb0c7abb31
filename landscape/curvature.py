"""The curvature of the mean loss as a linear operator (the kernels that read it: :mod:`landscape.krylov`).

Definitions (θ: the selected trainable parameters as one flat vector; batches b = 1..B of weight n_b —
samples, or the non-ignored tokens of a token-level loss (:mod:`landscape.objective`) —, N = Σ_b n_b;
``L_b`` the batch's mean loss; z the logits of batch b):

    L(θ) = Σ_b (n_b / N) · L_b(θ)                     weighted mean loss (exact for unequal batches)
    H    = ∇²_θ L = Σ_b (n_b / N) · ∇²_θ L_b           the Hessian
    G    = Σ_b (n_b / N) · J_bᵀ (∇²_z L_b) J_b         the generalized Gauss–Newton matrix, J_b = ∂z/∂θ;
                                                       positive semi-definite when the loss is convex in z
                                                       (cross-entropy, MSE)

Batches may have any structure and models any output structure (:mod:`landscape.batch`); the loss may be
the model's own (``loss_fn="model"``). Every product runs attention on PyTorch's math kernel
(:func:`landscape.autodiff.math_attention`), the one with a second derivative.

:class:`CurvatureOperator` applies H or G to flat vectors (``matvec``) and to blocks of vectors
(``matmat``: one pass over the data for the whole block). The model is run in **eval mode** for every
product: BatchNorm then normalizes with its running statistics and Dropout is off, so the loss is a
fixed, deterministic function of θ over the given samples and the operator is one symmetric matrix,
independent of how the samples are cut into batches. (In train mode BatchNorm couples the samples of
a batch, and the "Hessian" would change with the batch composition.)

The kernels that read it live in :mod:`landscape.krylov` and work on any object with ``size``,
``dtype``, ``device`` and ``matmat`` (see :class:`~landscape.krylov.operators.Operator`):
:func:`lanczos` (top or bottom eigenpairs, full reorthogonalization, thick restart, convergence on
Ritz residuals), the trace estimators :func:`hutchinson`, :func:`hutch_plus_plus`, :func:`xtrace` and
:func:`exact_trace`, and stochastic Lanczos quadrature :func:`slq` (all chains advanced together, one
``matmat`` per step). They are re-exported here, so ``from landscape.curvature import lanczos`` works.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn

from landscape.autodiff import (
    DoubleBackwardError,
    affine_batch_norm,
    explain_double_backward,
    is_double_backward_error,
    math_attention,
)
from landscape.batch import Batch
from landscape.data import Batches, as_batches
from landscape.evaluate import LossError, LossFn, total_weight
from landscape.ggn import ForwardModeError, jvp_ggn_rows, scoring_dtype
from landscape.graph_cache import CACHE_FRACTION, GraphCache
from landscape.krylov import (
    TRACE_METHODS,
    TRACE_MIN_MATVEC,
    DenseOperator,
    LanczosResult,
    Operator,
    Quadrature,
    TraceResult,
    exact_trace,
    hutch_plus_plus,
    hutchinson,
    lanczos,
    slq,
    xtrace,
)
from landscape.objective import Objective, as_objective
from landscape.params import trainable_parameters

__all__ = [
    # the operator (this module)
    "BACKENDS",
    "CACHE_FRACTION",
    "DEFAULT_BACKEND",
    "DEFAULT_GGN_BACKEND",
    "GGN_BACKENDS",
    "KINDS",
    "CurvatureOperator",
    "NonFiniteLossError",
    "ParamSelector",
    "check_mean_loss",
    "eval_mode",
    "select_parameters",
    # the kernels, re-exported from landscape.krylov
    "TRACE_METHODS",
    "TRACE_MIN_MATVEC",
    "DenseOperator",
    "LanczosResult",
    "Operator",
    "Quadrature",
    "TraceResult",
    "exact_trace",
    "hutch_plus_plus",
    "hutchinson",
    "lanczos",
    "slq",
    "xtrace",
]

KINDS = ("hessian", "ggn")
BACKENDS = ("autograd", "autograd_batched", "func")  # every kind
GGN_BACKENDS = (*BACKENDS, "jvp")  # "jvp" has no Hessian: it never differentiates the model twice
DEFAULT_BACKEND = "autograd"
# the Gauss–Newton backend by default: the memory-lean forward-mode product (CurvatureOperator's docstring
# has the measurements); "autograd" where the model has an operation without a forward-mode derivative
DEFAULT_GGN_BACKEND = "jvp"

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


def check_mean_loss(model: nn.Module, loss_fn: LossFn | str | Objective, data: Batches) -> float:
    """Check the loss on ``data`` is a finite scalar mean; return the full-data loss.

    Raises :class:`LossError` when ``loss_fn`` returns a non-scalar, or a value that is not the mean over
    the batch. A sum (``reduction="sum"``) is detected on the first batch with at least two samples: a
    mean satisfies ``L(batch) = (w₁·L(first half) + w₂·L(rest)) / (w₁ + w₂)`` exactly (up to rounding),
    with w the halves' weights (samples or tokens); a sum gives about twice that. Raises
    :class:`NonFiniteLossError` when the loss is NaN or infinite. Runs one forward pass over the data
    (plus two half-batch passes), in eval mode, without gradients.
    """
    objective = as_objective(loss_fn, model)
    total, weights = 0.0, 0.0
    checked_mean = False
    with torch.no_grad(), eval_mode(model):
        for batch in data:
            weight = objective.weight(batch)
            if weight == 0:
                continue
            value = float(objective.batch_loss(model, batch))
            if not math.isfinite(value):
                raise NonFiniteLossError(f"the loss is {value} on a batch of {batch.n_samples} samples; its curvature "
                                         "is undefined.")
            if not checked_mean and batch.n_samples >= 2:
                checked_mean = _check_is_mean(model, objective, batch, value, _mean_rtol(model))
            total += value * weight
            weights += weight
    if weights == 0:
        total_weight(objective, data)  # raises: nothing to score
    return total / weights


def _mean_rtol(model: nn.Module) -> float:
    """The relative tolerance of the mean check: 1e-3, or 16 eps of a coarser parameter dtype.

    1e-3 is far above float32 rounding of a batch mean and far below the factor ~2 of a sum; a bf16
    (eps 2⁻⁷) or fp16 (eps 2⁻¹⁰) model rounds its losses by a few eps, so the tolerance grows to 16 eps
    (0.125 for bf16, 0.016 for fp16), still far below the 0.5 relative gap of a sum over two halves.
    """
    eps = max((torch.finfo(p.dtype).eps for p in model.parameters() if p.is_floating_point()), default=0.0)
    return max(1e-3, 16 * eps)


def _check_is_mean(model: nn.Module, objective: Objective, batch: Batch, whole: float, rtol: float = 1e-3) -> bool:
    half = batch.n_samples // 2
    parts = [batch.rows(0, half), batch.rows(half, batch.n_samples)]
    sizes = [objective.weight(p) for p in parts]
    if min(sizes) == 0:
        return False  # a half with nothing to score: try the next batch
    first, rest = (float(objective.batch_loss(model, p)) for p in parts)
    weighted = (sizes[0] * first + sizes[1] * rest) / (sizes[0] + sizes[1])
    # rtol (see _mean_rtol): far above the rounding of a batch mean, far below the factor ~2 of a sum.
    if abs(whole - weighted) > rtol * max(abs(whole), abs(weighted)) + 1e-12:
        hint = " (it looks like a sum: use reduction='mean')" if abs(whole - (first + rest)) <= rtol * abs(whole) else ""
        raise LossError(
            "loss_fn must return the mean loss over the batch: on a batch its value "
            f"{whole:.6g} differs from the weighted mean {weighted:.6g} of its values on the two halves{hint}."
        )
    return True


# --------------------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------------------


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
    ``torch.func.vmap`` over forward-over-reverse ``jvp(grad)`` (it rebuilds the graph on every call);
    ``"jvp"`` (``kind="ggn"`` only, :mod:`landscape.ggn`) takes J v by forward mode, the loss's Hessian in
    its logits and Jᵀ by one reverse pass: no second derivative through the model.
    Measured per vector (2-core CPU, one thread, two runs; a 4.8k-parameter MLP on 1000 samples / a
    90k-parameter CNN on 512 samples):

        data, columns per call      autograd              autograd_batched     func
        one batch (cached), 8       1.4 / 179 ms          2.0 / 259–291 ms     1.8–2.3 / 368–403 ms
        four batches (rebuilt), 8   1.4–2.9 / 175–208 ms  2.2 / 216 ms         2.1–3.3 / 206–245 ms

    The loop is the fastest or close to it on CPU and needs the least memory of the Hessian backends
    (hence their default); the batched forms may pay off on a GPU (not measured).

    ``"jvp"`` is the Gauss–Newton default, chosen for memory: on a GPT-2 of 10.8M parameters (8×64
    tokens, ``benchmarks/curvature_memory.py``, CPU resident set) one product peaks at 2.07× the memory of a
    gradient step, against 2.89× for ``"autograd"``'s GGN and 3.68× for a Hessian product, and its top-20
    Lanczos (float32 basis on the CPU) at 2.27× besides the basis. Its speed per vector against
    ``"autograd"`` (CPU, one thread): 0.62× on a 12.7k-parameter CNN over two batches, 1.33× on a 3.7M GPT-2.
    Where the model has an operation without a forward-mode derivative (an ``autograd.Function`` with no
    ``setup_context``, reentrant activation checkpointing), the default steps back to ``"autograd"`` at
    the first product; ``backend="jvp"`` asked for by name refuses such a model instead.

    Graph caching (``"autograd"`` and ``"autograd_batched"``): building a batch's gradient graph costs a
    forward and a backward pass and each product on it about two gradients, so keeping the graphs alive
    between calls takes a product over several batches from 3 gradients' FLOPs to 2 (one column per call;
    a block shares a rebuilt graph between its columns; ``benchmarks/hessian_vs_pyhessian.py`` counts
    and times it). ``cache_graph=None`` (default) measures the first graph built
    (:class:`landscape.graph_cache.GraphMeter`: the tensors saved for backward, and on CUDA the allocated
    memory), scales it to every batch by its number of samples, and keeps the graphs of the
    leading batches whose estimates fit ``cache_budget`` bytes (default :data:`CACHE_FRACTION` of the
    device's free memory); a single batch's graph is always kept (the product needs it anyway).
    ``cache_graph=True`` keeps every batch's graph, False none. ``cache_estimate`` is the estimated
    memory of all batches' graphs and ``cached_batches`` how many are kept (both None until the first
    product).

    Memory: a Hessian product holds a batch's activations, gradient graph and that graph's backward at
    once (on the GPT-2 above 3.4–3.8× a gradient step on the same batch). ``max_batch_size=m`` multiplies
    on parts of at most ``m`` samples of each batch (:meth:`Batches.split`; each part weighs its samples
    or tokens: the same operator), so the peak follows the part — halves 2.1–2.3×, quarters 1.6×, for
    1.1× and 1.4× the time of a product with its graph rebuilt. It turns caching off unless forced.

    Precision: vectors are cast to the model's dtype for the products (bf16, fp16, float32 or float64
    weights), and the per-batch products are summed in float32 at least (``result_dtype``, what
    ``matmat`` returns): float32 for half-precision models, the model's dtype otherwise. The kernels keep
    their own state in float64 (:mod:`landscape.krylov`).

    The model runs in eval mode for every product and its modes are restored afterwards; weights and
    ``.grad`` are never written. The operator describes the weights it was built at: changing them in
    place while a cached graph is alive makes autograd raise. Call :meth:`release` (or use ``with``) to
    free the cached graphs.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Batches | object,
        *,
        kind: str = "hessian",
        params: ParamSelector = None,
        backend: str | None = None,
        cache_graph: bool | None = None,
        cache_budget: int | None = None,
        max_block: int | None = None,
        max_batch_size: int | None = None,
        check_loss: bool = True,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        self._fallback = backend is None and kind == "ggn"  # the default may step back to "autograd"
        backend = (DEFAULT_GGN_BACKEND if kind == "ggn" else DEFAULT_BACKEND) if backend is None else backend
        if backend not in GGN_BACKENDS:
            raise ValueError(f"backend must be one of {GGN_BACKENDS}, got {backend!r}.")
        if backend not in BACKENDS and kind != "ggn":
            raise ValueError("backend 'jvp' computes the Gauss–Newton matrix only (kind='ggn'); the Hessian needs a "
                             "second derivative of the model: use backend 'autograd'.")
        if max_block is None:
            # the loops differentiate one column at a time on the batch's graph: no extra memory per column
            max_block = 1 << 30 if backend in ("autograd", "jvp") else 16
        if max_block < 1:
            raise ValueError(f"max_block must be a positive integer, got {max_block}.")
        data = data if isinstance(data, Batches) else as_batches(data)
        if max_batch_size is not None:
            data = data.split(max_batch_size)
            if cache_graph is None:  # the split is asked for to bound memory: keeping every part's graph undoes it
                cache_graph = False
        self.max_batch_size = max_batch_size
        self.model = model
        self.loss_fn = loss_fn
        self.objective = as_objective(loss_fn, model)
        self.kind = kind
        self.backend = backend
        self.max_block = int(max_block)
        self.params = select_parameters(model, params)
        first = next(iter(self.params.values()))
        self.dtype = first.dtype
        self.device = first.device
        # products run in the model's dtype; their per-batch sums (and matmat's result) in float32 at least
        self.result_dtype = scoring_dtype(self.dtype)
        self.data = data.to(self.device)
        self.names = tuple(self.params)
        self.shapes = tuple(tuple(p.shape) for p in self.params.values())
        self.size = sum(p.numel() for p in self.params.values())
        self.n_hvp = 0
        self.cache_graph = cache_graph
        # the graph's outputs: the flat gradient and the per-parameter gradients it was joined from
        outputs = 2 * self.size * torch.finfo(self.dtype).bits // 8
        self._cache = GraphCache(cache_graph, cache_budget, [b.n_samples for b in self.data], self.device,
                                 [*model.parameters(), *model.buffers()], outputs)
        self._batched_ok = True
        self.loss = check_mean_loss(model, self.objective, self.data) if check_loss else float("nan")
        self.total_weight = total_weight(self.objective, self.data)

    # -- shape and conversions ---------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def to_named(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into detached tensors keyed, shaped and typed like the selected parameters
        (on the vector's device)."""
        vector = vector.reshape(-1)
        if vector.numel() != self.size:
            raise ValueError(f"vector has {vector.numel()} entries, the operator acts on {self.size}.")
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            count = math.prod(shape)
            part = vector[offset : offset + count].detach().reshape(shape)
            out[name] = part.to(self.params[name].dtype).clone()
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

    @property
    def cache_estimate(self) -> int | None:
        """Estimated bytes of every batch's gradient graph (None before the first product)."""
        return self._cache.estimate

    @property
    def cached_batches(self) -> int | None:
        """How many batches keep their gradient graph between products (None until decided)."""
        return self._cache.kept

    def release(self) -> None:
        """Free the cached gradient graphs."""
        self._cache.graphs.clear()

    def __enter__(self) -> CurvatureOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals ---------------------------------------------------------------------------------

    def _apply(self, block: torch.Tensor) -> torch.Tensor:
        rows = block.T.contiguous()  # [k, n]: batched autograd/vmap take the batch dimension first
        total: torch.Tensor | None = None  # the first batch's product becomes the sum: one vector less alive
        with torch.enable_grad(), eval_mode(self.model), math_attention():
            for index, batch in enumerate(self.data):
                weight = self.objective.weight(batch) / self.total_weight
                if weight == 0:
                    continue
                try:
                    if self.backend == "jvp":
                        product = self._jvp_product(index, batch, rows)
                    elif self.backend == "func":
                        product = self._func_product(batch, rows)
                    elif self.kind == "hessian":
                        product = self._autograd_hessian(index, batch, rows)
                    else:
                        product = self._autograd_ggn(index, batch, rows)
                except RuntimeError as error:
                    if not is_double_backward_error(error):
                        raise
                    raise DoubleBackwardError(self._explain(batch, error)) from None
                if total is None:
                    total = product.to(self.result_dtype).mul_(weight)  # a fresh tensor of the backend's
                else:
                    total.add_(product.to(total.dtype), alpha=weight)
                del product
        if total is None:  # no batch carries weight
            total = torch.zeros(rows.shape, dtype=self.result_dtype, device=rows.device)
        return total.T

    def _jvp_product(self, index: int, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        try:
            return jvp_ggn_rows(self.model, self.objective, self.params, batch, rows)
        except ForwardModeError:
            if not self._fallback:
                raise
            self.backend = "autograd"  # chosen by default: this model needs the double-backward product
            return self._autograd_ggn(index, batch, rows)

    def _explain(self, batch: Batch, error: RuntimeError) -> str:
        small = batch.rows(0, min(2, batch.n_samples))
        return explain_double_backward(self.model, lambda: self.objective.batch_loss(self.model, small), error)

    def _loss(self, batch: Batch, outputs: object | None = None) -> torch.Tensor:
        if outputs is None:
            return self.objective.batch_loss(self.model, batch)
        return self.objective.loss(outputs, batch)

    def _flat_grads(self, outputs: torch.Tensor | Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
                    grad_outputs: torch.Tensor | Sequence[torch.Tensor] | None, *, create_graph: bool = False,
                    retain_graph: bool = True, batched: bool = False) -> torch.Tensor:
        grads = torch.autograd.grad(
            outputs, list(inputs), grad_outputs=grad_outputs, create_graph=create_graph, retain_graph=retain_graph,
            allow_unused=True, materialize_grads=True, is_grads_batched=batched,
        )
        lead = 1 if batched else 0
        return torch.cat([g.reshape(*g.shape[:lead], -1) for g in grads], dim=lead)

    def _columns(self, product: Callable[[torch.Tensor, bool, bool], torch.Tensor], rows: torch.Tensor,
                 keep: bool) -> torch.Tensor:
        """Apply ``product(rows, batched, retain)`` to every row, reusing one graph (kept after the last
        row when ``keep``).

        ``"autograd"`` loops over the rows (the graph is retained until the last one);
        ``"autograd_batched"`` pushes all rows through one batched call and falls back to the loop if an
        operation has no batching rule.
        """
        if self.backend == "autograd_batched" and rows.shape[0] > 1 and self._batched_ok:
            try:
                return product(rows, True, keep)
            except RuntimeError:
                self._batched_ok = False  # an op without a batching rule: loop from now on
        last = rows.shape[0] - 1
        return torch.stack([product(row, False, keep or i < last) for i, row in enumerate(rows)])

    def _autograd_hessian(self, index: int, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        params = list(self.params.values())

        def build() -> tuple[torch.Tensor, ...]:
            with affine_batch_norm():
                loss = self._loss(batch)
            return (self._flat_grads(loss, params, None, create_graph=True),)

        (gradient,), keep = self._cache.get(index, build)
        if not gradient.requires_grad:  # the loss is at most linear in these parameters
            return torch.zeros_like(rows)
        return self._columns(
            lambda r, batched, retain: self._flat_grads(gradient, params, r, retain_graph=retain, batched=batched),
            rows, keep,
        )

    def _autograd_ggn(self, index: int, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        params = list(self.params.values())

        def build() -> tuple[torch.Tensor, ...]:
            with affine_batch_norm():
                outputs = self.objective.logits(self.objective.forward(self.model, batch))
            loss = self.objective.loss_of_logits(outputs, batch)
            (loss_grad,) = torch.autograd.grad(loss, outputs, create_graph=True)
            probe = torch.zeros_like(outputs, requires_grad=True)
            # Jᵀu as a (linear) function of u; differentiating it w.r.t. u in direction v gives J v.
            pullback = self._flat_grads(outputs, params, probe, create_graph=True)
            return (outputs, loss_grad, probe, pullback)

        (outputs, loss_grad, probe, pullback), keep = self._cache.get(index, build)
        if not pullback.requires_grad or not loss_grad.requires_grad:
            return torch.zeros_like(rows)

        def product(r: torch.Tensor, batched: bool, retain: bool) -> torch.Tensor:
            (jv,) = torch.autograd.grad(pullback, probe, r, retain_graph=True, is_grads_batched=batched)
            (hjv,) = torch.autograd.grad(loss_grad, outputs, jv, retain_graph=True, is_grads_batched=batched,
                                         allow_unused=True, materialize_grads=True)
            return self._flat_grads(outputs, params, hjv, retain_graph=retain, batched=batched)

        return self._columns(product, rows, keep)

    def _func_product(self, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, grad, jvp, vjp, vmap

        base = torch.cat([p.detach().reshape(-1) for p in self.params.values()])
        names, shapes = self.names, self.shapes

        objective = self.objective

        def raw_outputs_at(flat: torch.Tensor) -> object:
            named, offset = {}, 0
            for name, shape in zip(names, shapes):
                count = math.prod(shape)
                named[name] = flat[offset : offset + count].view(shape)
                offset += count
            return objective.forward(lambda *a, **k: functional_call(self.model, named, a, k), batch)

        def outputs_at(flat: torch.Tensor) -> torch.Tensor:
            return objective.logits(raw_outputs_at(flat))

        def loss_of_outputs(out: torch.Tensor) -> torch.Tensor:
            return objective.loss_of_logits(out, batch)

        if self.kind == "hessian":
            gradient = grad(lambda flat: objective.loss(raw_outputs_at(flat), batch))

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
