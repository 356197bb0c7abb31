"""Gradient noise at a checkpoint: the covariance of per-sample gradients and the critical batch size.

With ``g_i`` the gradient of sample i's loss (i = 1..N over all batches), ``G = (1/N) Σ g_i`` the mean
gradient (the gradient of the sample-weighted mean loss) and ``Σ = (1/N) Σ (g_i − G)(g_i − G)ᵀ`` their
covariance (the 1/N convention: the data are the whole population), McCandlish et al. 2018 ("An
Empirical Model of Large-Batch Training") define two noise scales:

* ``B_simple = tr Σ / |G|²`` — the batch size at which the noise of a batch-mean gradient, ``tr Σ / B``,
  equals the signal ``|G|²``; it estimates the critical batch size when the Hessian is well conditioned;
* ``B_noise = tr(HΣ) / (GᵀHG)`` — the same with the noise and the signal measured in the curvature H
  (the batch size at which an SGD step gets half the loss decrease of a full-batch step at its optimal
  learning rate).

``tr(HΣ) = (1/N) Σ g_iᵀHg_i − GᵀHG``: one Hessian-vector product per sample, each a pass over the data,
so the exact value costs N products (N² per-sample passes). ``hessian_samples = m`` instead averages
``g_iᵀHg_i`` over a seeded uniform subset of m samples — an unbiased estimate of the first term, with the
standard error ``√((1 − m/N) · s²/m)`` (s² the sample variance; 0 when m = N) — for m + 1 products.

Per layer (a module's own parameters together), ``snr = |G_l|² / tr Σ_l``: the signal-to-noise ratio of
one sample's gradient for that layer; a batch of B gives B·snr, and ``1/snr`` is the layer's B_simple.

Per-sample gradients come from ``torch.func`` (``vmap`` over ``grad`` of ``functional_call`` on one
sample at a time; a model or loss vmap cannot batch falls back to a loop of single-sample backward passes),
in chunks of ``chunk_size`` samples, so memory is ``chunk_size × parameters``; the
chunks' means and scatter are merged with the pairwise update of Chan et al., in float64, which avoids the
cancellation of ``(1/N) Σ|g_i|² − |G|²``. The model runs in eval mode (BatchNorm uses its running
statistics, so each sample's loss is its own), and the loss must be the mean of the per-sample losses
(checked on the first batch). ``(inputs, targets)`` pairs with a loss function take the vmap route;
batches of any other structure (dicts, ``BatchEncoding``, dataclasses) and the model's own loss
(``loss_fn="model"``) take one sample at a time through the objective (:mod:`landscape.objective`). Every
sample is one equal term of the mean, so token-level losses, which weigh sequences by their token counts,
are refused with one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from landscape.batch import Batch
from landscape.curvature import CurvatureOperator, ParamSelector, eval_mode, select_parameters
from landscape.data import Batches, as_batches
from landscape.evaluate import LossError, LossFn, check_scalar_loss
from landscape.objective import Objective, as_objective
from landscape.params import preserved
from landscape.probe import ProbeContext, Result

__all__ = ["PROBE", "NoiseProbe", "gradient_noise", "per_sample_gradients"]

# Per-sample gradients held at once: chunk_size × parameters entries (float64), about 256 MB.
CHUNK_ENTRIES = 1 << 25


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def per_sample_gradients(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                         params: ParamSelector = None, *,
                         vectorize: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each sample's loss gradient (``[n, *shape]`` per selected parameter) and its loss ``[n]``.

    Sample i's loss is ``loss_fn(model(x[i:i+1]), y[i:i+1])``; the model runs as it is (call it in eval
    mode for BatchNorm to use running statistics). ``vectorize`` uses ``torch.func.vmap``; a model or loss
    that vmap cannot batch (data-dependent control flow, ``.item()``) is done one sample at a time instead.
    """
    return _PerSample(model, loss_fn, select_parameters(model, params), vectorize)(x, y)


class _PerSample:
    """Per-sample gradients by vmap, or by a loop from the first chunk on which vmap fails for this model/loss."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, selected: Mapping[str, nn.Parameter],
                 vectorize: bool = True) -> None:
        self.model, self.loss_fn, self.selected, self.vectorize = model, loss_fn, selected, vectorize

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.vectorize:
            try:
                return _vmapped(self.model, self.loss_fn, x, y, self.selected)
            except RuntimeError as error:
                if "vmap" not in str(error) and "batching rule" not in str(error):
                    raise
                self.vectorize = False
        return _looped(self.model, self.loss_fn, x, y, self.selected)


def _vmapped(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
             selected: Mapping[str, nn.Parameter]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    from torch.func import functional_call, grad_and_value, vmap

    theta0 = {name: p.detach() for name, p in selected.items()}

    def loss_one(theta: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return check_scalar_loss(loss_fn(functional_call(model, theta, (xi.unsqueeze(0),)), yi.unsqueeze(0)))

    grads, losses = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0))(theta0, x, y)
    return {name: g.detach() for name, g in grads.items()}, losses.detach()


def _looped(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
            selected: Mapping[str, nn.Parameter]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    rows: list[tuple[torch.Tensor, ...]] = []
    losses = []
    with torch.enable_grad():
        for i in range(int(x.shape[0])):
            loss = check_scalar_loss(loss_fn(model(x[i: i + 1]), y[i: i + 1]))
            rows.append(torch.autograd.grad(loss, list(selected.values()), allow_unused=True, materialize_grads=True))
            losses.append(loss.detach())
    grads = {name: torch.stack([row[k] for row in rows]) for k, name in enumerate(selected)}
    return grads, torch.stack(losses)


class _Moments:
    """Running count, mean and scatter ``Σ|g_i − mean|²`` per parameter (float64), merged chunk by chunk."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: dict[str, torch.Tensor] = {}
        self.scatter: dict[str, float] = {}

    def add(self, grads: Mapping[str, torch.Tensor]) -> None:
        count = int(next(iter(grads.values())).shape[0])
        total = self.n + count
        for name, g in grads.items():
            g = g.double()
            chunk_mean = g.mean(dim=0)
            chunk_scatter = float(((g - chunk_mean) ** 2).sum())
            if self.n == 0:
                self.mean[name], self.scatter[name] = chunk_mean, chunk_scatter
                continue
            delta = chunk_mean - self.mean[name]
            self.mean[name] = self.mean[name] + delta * (count / total)
            self.scatter[name] += chunk_scatter + float((delta**2).sum()) * self.n * count / total
        self.n = total


def _compare_mean(whole: float, losses: torch.Tensor) -> None:
    """The first batch's loss must be the mean of its single-sample losses."""
    mean = float(losses.double().mean())
    if not math.isfinite(whole):
        raise LossError(f"the loss is {whole} on the first batch; gradient noise is undefined.")
    # 1e-3 relative: far above float32 rounding, far below the factor n of a sum or a non-separable loss
    if abs(whole - mean) > 1e-3 * max(abs(whole), abs(mean)) + 1e-12:
        raise LossError(f"the loss must be the mean of per-sample losses: on the first batch it is {whole:.6g}, "
                        f"the mean of its {len(losses)} single-sample losses is {mean:.6g}.")


def _layer_of(name: str) -> str:
    return name.rpartition(".")[0] or name


def gradient_noise(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    params: ParamSelector = None,
    chunk_size: int | None = None,
    b_noise: bool = False,
    hessian_samples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Gradient noise over all samples of ``data``: ``trace_cov`` (tr Σ), ``grad_norm_sq`` (|G|²),
    ``b_simple``, ``n_samples`` and ``layers`` ({module: {trace_cov, grad_norm_sq, snr}}).

    With ``b_noise=True`` also ``trace_hessian_cov`` (tr HΣ), its ``trace_hessian_cov_stderr``,
    ``grad_hessian_grad`` (GᵀHG), ``b_noise``, ``hessian_samples`` and ``n_hvp``; ``hessian_samples``
    None uses every sample (exact, N + 1 Hessian-vector products), an integer m a seeded subset (m + 1).
    ``params`` restricts everything to a parameter group. The model is left as it was.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
    if hessian_samples is not None and (isinstance(hessian_samples, bool) or not isinstance(hessian_samples, int)
                                        or hessian_samples < 2):
        raise ValueError(f"hessian_samples must be an integer ≥ 2 or None (all samples), got {hessian_samples!r}.")
    batches = as_batches(data, device=_device_of(model))
    with preserved(model):
        names = list(select_parameters(model, params))
        size = sum(p.numel() for n, p in model.named_parameters() if n in names)
        chunk = chunk_size or max(1, min(256, CHUNK_ENTRIES // max(size, 1)))
        n = batches.n_samples
        chosen = None
        if b_noise and hessian_samples is not None and hessian_samples < n:
            chosen = np.sort(np.random.default_rng(seed).choice(n, size=hessian_samples, replace=False))
        op = CurvatureOperator(model, loss_fn, batches, params=names, check_loss=False) if b_noise else None
        moments, forms = _accumulate(model, loss_fn, batches, names, chunk, op, chosen)
        if op is not None:
            op.release()
    return _summary(moments, forms, op, n)


def _accumulate(model: nn.Module, loss_fn: LossFn, batches: Batches, names: list[str], chunk: int,
                op: CurvatureOperator | None, chosen: np.ndarray | None) -> tuple[_Moments, list[float]]:
    moments = _Moments()
    forms: list[float] = []
    offset = 0
    selected = select_parameters(model, names)
    if batches.structure == "pair" and callable(loss_fn) and not isinstance(loss_fn, Objective):
        vmapped = _PerSample(model, loss_fn, selected)

        def gradients(rows: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            return vmapped(*rows)

        def batch_loss(rows: Batch) -> torch.Tensor:
            x, y = rows
            return loss_fn(model(x), y)
    else:  # any batch structure, any objective (the model's own loss included): one sample at a time
        objective = _sample_level(as_objective(loss_fn, model), batches)

        def gradients(rows: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            return _row_gradients(model, objective, rows, selected)

        def batch_loss(rows: Batch) -> torch.Tensor:
            return objective.batch_loss(model, rows)
    with eval_mode(model):
        for index, batch in enumerate(batches):
            for start in range(0, batch.n_samples, chunk):
                rows = batch.rows(start, start + chunk)
                grads, losses = gradients(rows)
                if index == 0 and start == 0:
                    with torch.no_grad():
                        _compare_mean(float(check_scalar_loss(batch_loss(rows))), losses)
                if not bool(torch.isfinite(losses).all()):
                    raise LossError("a sample's loss is not finite; gradient noise is undefined at this point.")
                moments.add(grads)
                if op is not None:
                    forms.extend(_hessian_forms(op, grads, names, offset, chosen))
                offset += rows.n_samples
    return moments, forms


def _sample_level(objective: Objective, batches: Batches) -> Objective:
    """The objective, checked to weigh every sample equally (the mean gradient is then the plain mean)."""
    if any(objective.token_level(batch) for batch in batches):
        raise LossError("gradient noise treats each sample as one equal term of the mean loss; a token-level loss "
                        "weighs sequences by their token counts, which this probe does not model.")
    return objective


def _row_gradients(model: nn.Module, objective: Objective, rows: Batch,
                   selected: Mapping[str, nn.Parameter]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each sample's gradient for batches of any structure and any objective (the model's own loss
    included), one sample at a time."""
    grads: list[tuple[torch.Tensor, ...]] = []
    losses = []
    with torch.enable_grad():
        for i in range(rows.n_samples):
            loss = check_scalar_loss(objective.batch_loss(model, rows.rows(i, i + 1)))
            grads.append(torch.autograd.grad(loss, list(selected.values()), allow_unused=True, materialize_grads=True))
            losses.append(loss.detach())
    return {name: torch.stack([row[k] for row in grads]) for k, name in enumerate(selected)}, torch.stack(losses)


def _hessian_forms(op: CurvatureOperator, grads: Mapping[str, torch.Tensor], names: list[str], offset: int,
                   chosen: np.ndarray | None) -> list[float]:
    """``g_iᵀ H g_i`` for the chunk's samples that are in the subset (all when ``chosen`` is None)."""
    count = int(next(iter(grads.values())).shape[0])
    rows = np.arange(count)
    if chosen is not None:
        rows = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
        if rows.size == 0:
            return []
    index = torch.as_tensor(rows, device=op.device)
    flat = torch.cat([grads[name].index_select(0, index).reshape(len(rows), -1) for name in op.names], dim=1)
    block = flat.T.to(op.dtype)
    products = op.matmat(block)
    return (block.double() * products.double()).sum(dim=0).cpu().tolist()


def _summary(moments: _Moments, forms: list[float], op: CurvatureOperator | None, n: int) -> dict[str, Any]:
    trace_cov = sum(moments.scatter.values()) / n
    grad_sq = sum(float((m**2).sum()) for m in moments.mean.values())
    layers: dict[str, dict[str, float]] = {}
    for name in moments.mean:
        layer = layers.setdefault(_layer_of(name), {"trace_cov": 0.0, "grad_norm_sq": 0.0})
        layer["trace_cov"] += moments.scatter[name] / n
        layer["grad_norm_sq"] += float((moments.mean[name] ** 2).sum())
    for layer in layers.values():
        layer["snr"] = _ratio(layer["grad_norm_sq"], layer["trace_cov"])
    out: dict[str, Any] = {"trace_cov": trace_cov, "grad_norm_sq": grad_sq, "b_simple": _ratio(trace_cov, grad_sq),
                           "n_samples": n, "layers": layers}
    if op is not None:
        mean_flat = torch.cat([moments.mean[name].reshape(-1) for name in op.names])
        ghg = float(mean_flat @ op.matvec(mean_flat.to(op.dtype)).double())
        values = np.asarray(forms)
        m = len(values)
        stderr = 0.0 if m == n else math.sqrt(max(0.0, 1 - m / n) * values.var(ddof=1) / m)
        trace_hc = float(values.mean()) - ghg
        out.update({"trace_hessian_cov": trace_hc, "trace_hessian_cov_stderr": stderr, "grad_hessian_grad": ghg,
                    "b_noise": _ratio(trace_hc, ghg), "hessian_samples": m, "n_hvp": op.n_hvp})
    return out


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return math.inf if a > 0 else math.nan
    return a / b


class NoiseProbe:
    """Gradient noise scales ``B_simple`` and (``b_noise``) ``B_noise`` with per-layer signal-to-noise.

    Scalars ``trace_cov``, ``grad_norm_sq``, ``b_simple``, ``n_samples``, and with ``b_noise``:
    ``b_noise``, ``trace_hessian_cov``, ``trace_hessian_cov_stderr``, ``grad_hessian_grad``, ``n_hvp``;
    arrays ``layer_names``, ``layer_trace_cov``, ``layer_grad_norm_sq``, ``layer_snr``. ``hessian_samples``
    (None: all) sets the cost of ``B_noise`` (that many Hessian-vector products).
    """

    name = "noise"
    defaults: ClassVar[dict[str, Any]] = {"b_noise": True, "hessian_samples": 32, "chunk_size": None, "params": None,
                                          "seed": 0}

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """Per-sample gradients (batched by vmap: about one full-data gradient's arithmetic), and with
        ``b_noise`` one Hessian-vector product per sampled per-sample gradient plus one for the mean gradient."""
        settings = {**self.defaults, **params}
        hvp = min(int(settings["hessian_samples"] or n_samples), n_samples) + 1 if settings["b_noise"] else 0
        return {"gradient": 1.0, "hvp": float(hvp)}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        settings = {**self.defaults, **params}
        selector = settings["params"]
        try:
            found = gradient_noise(ctx.model, ctx.loss_fn, ctx.train, params=list(selector) if isinstance(selector, tuple)
                                   else selector, chunk_size=settings["chunk_size"], b_noise=bool(settings["b_noise"]),
                                   hessian_samples=settings["hessian_samples"], seed=int(settings["seed"]))
        except LossError as error:
            return Result.invalid(str(error), settings)
        if found["grad_norm_sq"] == 0.0:
            return Result.invalid(f"the mean gradient is exactly zero at step {ctx.step}; the noise scale is "
                                  "undefined.", settings)
        keys = ("trace_cov", "grad_norm_sq", "b_simple", "n_samples", "b_noise", "trace_hessian_cov",
                "trace_hessian_cov_stderr", "grad_hessian_grad", "n_hvp")
        scalars = {k: float(found[k]) for k in keys if k in found}
        layers = found["layers"]
        arrays = {"layer_names": np.array(list(layers), dtype=str),
                  **{f"layer_{k}": np.array([v[k] for v in layers.values()]) for k in ("trace_cov", "grad_norm_sq",
                                                                                        "snr")}}
        result = Result(scalars=scalars, arrays=arrays, params=settings)
        if result.has_nonfinite():
            return Result.invalid("the noise scales are not finite at this checkpoint.", settings)
        return result


PROBE = NoiseProbe()
