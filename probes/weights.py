"""Data-free weight-spectrum diagnostics: heavy-tailed self-regularization (Martin & Mahoney).

For every weight matrix ``W`` (``N × M``, ``N ≥ M``; which modules count, and how conv kernels are handled,
is in :mod:`probes._weight_matrices`) the ESD is the ``M`` eigenvalues ``λ = σ²/N`` of ``WᵀW/N``, from the
eigenvalues of ``WᵀW`` in float64 (``solver="gram"``, the default: a symmetric rank-k update and a
symmetric eigensolver, 2–5× faster than an SVD on a CPU; equal shapes batched) or from the singular values
``σ`` (``solver="svdvals"``: ``torch.linalg.svdvals``, relatively accurate even for ``σ`` far below
``σ_max``, where the Gram route carries an absolute error of ~1e-16·λ_max).
``esd_scale="none"`` keeps ``λ = σ²``, WeightWatcher's convention; the exponent ``alpha`` does not depend on
the scale, the norms shift by ``log10 N``. Per matrix:

* ``alpha``: exponent of the ESD's tail density ``p(λ) ∝ λ^(−alpha)`` by maximum likelihood, with the
  ``xmin`` of least Kolmogorov–Smirnov distance ``ks_distance`` (:mod:`probes._powerlaw`); ``alpha_stderr``
  ``= (alpha − 1)/√n_tail``. Trained layers read ``alpha ≈ 2–4``; ``alpha > 6`` is a near-random layer.
* ``alpha_hat = alpha·log10 λ_max``; ``spectral_norm = λ_max``; ``log_spectral_norm = log10 λ_max``;
  ``log_norm = log10 Σλ`` (the squared Frobenius norm on the ESD's scale); ``stable_rank = Σλ / λ_max``.
* ``mp_edge``: the Marchenko–Pastur bulk edge ``s²(1 + √(M/N))²``, with the bulk variance ``s²`` fitted
  robustly by matching the median of the bulk eigenvalues to the MP median (:mod:`probes._marchenko_pastur`);
  ``n_spikes``: eigenvalues above ``mp_threshold`` = the edge plus its Tracy–Widom margin at ``tw_level``.
  Eigenvalues below ``1e-12·λ_max`` (rounding noise of exact zeros, whose size depends on the solver) count
  as zero here and are left out of the power-law fit, so a rank-``r`` layer has ``r`` spikes either way.
* Randomized ESD (``randomize=True``): the same entries permuted; its MP scale is their variance, known
  exactly. ``n_traps`` counts its eigenvalues above that MP threshold: a *correlation trap* (a few very
  large entries, or a large mean, that no permutation removes). ``rand_distance`` is the KS distance
  between the ESD and the randomized ESD (0: the layer looks random).

A layer with non-finite weights, or too few eigenvalues for a fit, gets ``valid=False``, NaN in what could
not be measured and a ``message``; the others go on. Model summaries average over the fitted layers:
``alpha_mean``, ``alpha_weighted`` (``Σ alpha·log10 λ_max / L``), ``log_norm_mean``, ``log_spectral_norm_mean``.

>>> import torch
>>> from torch import nn
>>> from probes import weights
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(100, 300), nn.ReLU(), nn.Linear(300, 6))
>>> table = weights.layer_spectra(model)
>>> list(table.layer), list(table.n_evals), list(table.n_spikes)
(['0', '2'], [100, 6], [0, 0])
>>> bool(table.valid[0]), bool(1.0 < table.alpha[0] < 20.0)
(True, True)
>>> table.message[1]
'too few eigenvalues for a power-law fit (6 positive < min_tail=10)'
>>> weights.esd(model, "0").shape
(100,)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from landscape.probe import ProbeContext, Result
from probes import _marchenko_pastur as mp
from probes._powerlaw import fit_power_law
from probes._weight_matrices import (
    CONV_MODES,
    SOLVERS,
    WeightMatrix,
    compute_device,
    permuted,
    singular_values,
    weight_matrices,
)

ESD_SCALES = ("N", "none")
ZERO_RTOL = 1e-12  # eigenvalues below λ_max·ZERO_RTOL are rounding noise of exact zeros (rank deficiency)
PER_LAYER_KEYS = ("alpha", "alpha_hat", "ks_distance", "xmin", "spectral_norm", "log_norm", "stable_rank",
                  "mp_edge", "n_spikes", "n_traps")
COLUMNS = ("layer", "name", "kind", "matrix_shape", "n", "m", "n_matrices", "n_evals", "valid", "message", "alpha",
           "alpha_stderr", "xmin", "n_tail", "ks_distance", "alpha_hat", "spectral_norm", "log_spectral_norm",
           "log_norm", "stable_rank", "mp_scale", "mp_edge", "mp_threshold", "n_spikes", "rand_lambda_max",
           "rand_mp_edge", "n_traps", "trap", "rand_distance")
_INT_COLUMNS = ("n", "m", "n_matrices", "n_evals", "n_tail", "n_spikes", "n_traps")
_TEXT_COLUMNS = ("layer", "name", "kind", "matrix_shape", "message")


def _check(conv: str, esd_scale: str, min_tail: int, tw_level: float, solver: str = "gram") -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}.")
    if conv not in CONV_MODES:
        raise ValueError(f"conv must be one of {', '.join(map(repr, CONV_MODES))}, got {conv!r}.")
    if esd_scale not in ESD_SCALES:
        raise ValueError(f"esd_scale must be one of {', '.join(map(repr, ESD_SCALES))}, got {esd_scale!r}.")
    if int(min_tail) < 2:
        raise ValueError(f"min_tail must be an integer of at least 2, got {min_tail}.")
    if not 0.0 < float(tw_level) < 1.0:
        raise ValueError(f"tw_level must lie strictly between 0 and 1, got {tw_level}.")


def _matrices(model: nn.Module, conv: str, embeddings: bool) -> list[WeightMatrix]:
    found = list(weight_matrices(model, conv=conv, embeddings=embeddings))
    if not found:
        extra = "" if embeddings else " (embeddings are left out unless embeddings=True)"
        raise ValueError(f"the model ({type(model).__name__}) has no weight matrices: expected nn.Linear, "
                         f"convolutions, nn.MultiheadAttention or Hugging Face Conv1D modules{extra}.")
    return found


def _eigenvalues(sv: torch.Tensor, matrix: WeightMatrix, esd_scale: str) -> np.ndarray:
    values = sv.double().pow(2).reshape(-1).numpy()
    if esd_scale == "N":
        values = values / matrix.n
    return np.sort(values)


def _nonfinite(matrix: WeightMatrix) -> str | None:
    stack = matrix.stack
    # One pass in the weights' dtype: NaN or ±Inf anywhere spoils the sum; only a sum that overflows on
    # finite weights takes the exact check. On a CPU numpy does it, without waking torch's thread pool.
    if stack.device.type == "cpu" and stack.dtype != torch.bfloat16:
        array = stack.numpy()
        if math.isfinite(float(array.sum())) or bool(np.isfinite(array).all()):
            return None
    elif math.isfinite(float(stack.sum())) or bool(torch.isfinite(stack).all()):
        return None
    nans, infs = int(torch.isnan(stack).sum()), int(torch.isinf(stack).sum())
    return f"non-finite weights in {matrix.parameter} ({nans} NaN, {infs} Inf entries)"


def _ks_two_sample(a: np.ndarray, b: np.ndarray) -> float:
    """Largest gap between the empirical CDFs of two samples (evaluated at every point of both)."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def _row(matrix: WeightMatrix, evals: np.ndarray | None, rand: np.ndarray | None, rand_var: float | None,
         *, esd_scale: str, min_tail: int, ks: str, tw_level: float, message: str | None) -> dict[str, Any]:
    nan = float("nan")
    row: dict[str, Any] = {c: nan for c in COLUMNS}
    row.update(layer=matrix.layer, name=matrix.name, kind=matrix.kind, matrix_shape=matrix.shape, n=matrix.n, m=matrix.m,
               n_matrices=matrix.count, n_evals=0 if evals is None else int(evals.size), valid=False,
               message=message, n_tail=0, n_spikes=-1, n_traps=-1, trap=False)
    if evals is None:
        return row
    top = float(evals[-1])
    if not top > 0.0:
        row["message"] = "all singular values are zero"
        return row
    total = float(evals.sum())
    row.update(spectral_norm=top, log_spectral_norm=math.log10(top), log_norm=math.log10(total),
               stable_rank=total / top)
    scale_n = matrix.n if esd_scale == "none" else 1
    # Rounding noise of exact zeros (its size depends on the solver) counts as zero, for the bulk as for the fit.
    positive = evals > top * ZERO_RTOL
    cleaned = np.where(positive, evals, 0.0)
    bulk = mp.fit_bulk(cleaned / scale_n, matrix.n, matrix.m, level=tw_level, n_matrices=matrix.count)
    row.update(mp_scale=bulk.scale * scale_n, mp_edge=bulk.edge * scale_n, mp_threshold=bulk.threshold * scale_n,
               n_spikes=bulk.n_spikes)
    if rand is not None and rand_var is not None:
        edge, threshold = mp.bulk_threshold(rand_var, bulk.ratio, matrix.n, matrix.m, tw_level, matrix.count)
        n_traps = int(np.count_nonzero(rand / scale_n > threshold))
        row.update(rand_lambda_max=float(rand[-1]), rand_mp_edge=edge * scale_n, n_traps=n_traps, trap=n_traps > 0,
                   rand_distance=_ks_two_sample(evals, rand))
    fit = fit_power_law(evals[positive], min_tail=min_tail, ks=ks)
    if not fit.ok:
        row["message"] = fit.message
        return row
    row.update(valid=True, message=None, alpha=fit.alpha, alpha_stderr=fit.stderr, xmin=fit.xmin, n_tail=fit.n_tail,
               ks_distance=fit.ks_distance, alpha_hat=fit.alpha * math.log10(top))
    return row


def _analyze(model: nn.Module, *, conv: str = "slices", embeddings: bool = False, esd_scale: str = "N",
             min_tail: int = 10, ks: str = "two_sided", randomize: bool = True, tw_level: float = 0.99,
             seed: int = 0, device: torch.device | str | None = None, solver: str = "gram",
             ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The spectra table and each row's ESD (by row ``name``)."""
    _check(conv, esd_scale, min_tail, tw_level, solver)
    found = _matrices(model, conv, embeddings)
    where = compute_device(device, found)
    problems = {i: _nonfinite(m) for i, m in enumerate(found)}
    good = [i for i, problem in problems.items() if problem is None]
    values = dict(zip(good, singular_values([found[i].stack for i in good], device=where, solver=solver)))
    rand_values: dict[int, torch.Tensor] = {}
    rand_var: dict[int, float] = {}
    if randomize and good:
        rng = np.random.default_rng(int(seed))
        shuffled = {i: permuted(found[i].stack, rng) for i in good}
        rand_values = dict(zip(good, singular_values(list(shuffled.values()), device=where, solver=solver)))
        # The MP scale of the permuted matrix (σ²/N scale): the entries' variance, from the float64 copy.
        rand_var = {i: float(shuffled[i].numpy().var()) for i in good}
    rows, spectra = [], {}
    for i, matrix in enumerate(found):
        evals = None if i not in values else _eigenvalues(values[i], matrix, esd_scale)
        rand = None if i not in rand_values else _eigenvalues(rand_values[i], matrix, esd_scale)
        rows.append(_row(matrix, evals, rand, rand_var.get(i), esd_scale=esd_scale, min_tail=int(min_tail), ks=ks,
                         tw_level=float(tw_level), message=problems[i]))
        spectra[matrix.name] = evals if evals is not None else np.full(matrix.count * matrix.m, np.nan)
    return _table(rows), spectra


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a frame, each column built once in its dtype (no per-column conversion afterwards)."""
    columns: dict[str, Any] = {}
    for column in COLUMNS:
        values = [row[column] for row in rows]
        if column in _INT_COLUMNS:
            columns[column] = np.asarray(values, dtype=np.int64)
        elif column in ("valid", "trap"):
            columns[column] = np.asarray(values, dtype=bool)
        elif column in _TEXT_COLUMNS:
            columns[column] = values
        else:
            columns[column] = np.asarray(values, dtype=np.float64)
    return pd.DataFrame(columns)


def layer_spectra(model: nn.Module, *, conv: str = "slices", embeddings: bool = False, esd_scale: str = "N",
                  min_tail: int = 10, ks: str = "two_sided", randomize: bool = True, tw_level: float = 0.99,
                  seed: int = 0, device: torch.device | str | None = None, solver: str = "gram") -> pd.DataFrame:
    """One row per weight matrix: ``layer`` (its module's name in ``named_modules()``), ``name`` (unique row
    id: the layer, ``"{layer}.q/k/v"`` for packed attention projections, ``"model"`` for the root), the
    metrics of the module docstring, ``valid`` and ``message``.

    ``conv``: ``"slices"`` pools the ESDs of a kernel's ``(out, in)`` position slices (WeightWatcher's
    default), ``"reshape"`` uses one ``(out, in·prod(k))`` matrix. ``ks``: ``"two_sided"`` (exact KS
    distance) or ``"lower"`` (WeightWatcher's). ``min_tail``: fewest eigenvalues a fitted tail may have.
    ``tw_level``: confidence of the Tracy–Widom margin. ``seed``: the randomized ESD's permutation.
    ``solver``: ``"gram"`` (eigenvalues of ``WᵀW`` in float64, the faster) or ``"svdvals"`` (see
    :func:`probes._weight_matrices.singular_values`). ``device``: where the solves run (default: the weights').
    """
    table, _ = _analyze(model, conv=conv, embeddings=embeddings, esd_scale=esd_scale, min_tail=min_tail, ks=ks,
                        randomize=randomize, tw_level=tw_level, seed=seed, device=device, solver=solver)
    return table


def esd(model: nn.Module, layer: str, *, conv: str = "slices", esd_scale: str = "N",
        device: torch.device | str | None = None, solver: str = "gram") -> np.ndarray:
    """The eigenvalues (ascending) of one weight matrix's ESD, chosen by row ``name`` or module name."""
    _check(conv, esd_scale, 2, 0.5, solver)
    found = list(weight_matrices(model, conv=conv, embeddings=True))
    chosen = [m for m in found if m.name == layer] or [m for m in found if m.layer == layer]
    if not chosen:
        known = ", ".join(repr(m.name) for m in found) or "none"
        raise KeyError(f"no weight matrix named {layer!r} in the model; its weight matrices are: {known}.")
    if len(chosen) > 1:
        raise KeyError(f"layer {layer!r} holds {len(chosen)} weight matrices; name one of "
                       f"{', '.join(repr(m.name) for m in chosen)}.")
    matrix = chosen[0]
    problem = _nonfinite(matrix)
    if problem is not None:
        raise ValueError(f"layer {layer!r} has {problem}; its ESD is undefined.")
    (values,) = singular_values([matrix.stack], device=compute_device(device, chosen), solver=solver)
    return _eigenvalues(values, matrix, esd_scale)


def summarize(table: pd.DataFrame) -> dict[str, float]:
    """Model-level summaries over the layers with a fit (norms over every layer with finite weights)."""
    fitted = table[np.isfinite(table["alpha"].to_numpy(dtype=float))]
    measured = table[np.isfinite(table["log_norm"].to_numpy(dtype=float))]
    out: dict[str, float] = {"n_layers": float(len(table)), "n_fitted": float(len(fitted)),
                             "n_invalid": float((~table["valid"]).sum())}
    if len(fitted):
        out["alpha_mean"] = float(fitted["alpha"].mean())
        out["alpha_weighted"] = float(fitted["alpha_hat"].mean())
    if len(measured):
        out["log_norm_mean"] = float(measured["log_norm"].mean())
        out["log_spectral_norm_mean"] = float(measured["log_spectral_norm"].mean())
        out["stable_rank_mean"] = float(measured["stable_rank"].mean())
        out["n_spikes_total"] = float(measured["n_spikes"].clip(lower=0).sum())
        out["n_traps_total"] = float(measured["n_traps"].clip(lower=0).sum())
    return out


def log_histogram(evals: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(log10 edges [bins+1], counts [bins])`` of the positive eigenvalues on log-spaced bins.

    The density on a log-log plot is ``counts / (n_evals · Δλ)`` with ``Δλ`` the linear width of each bin.
    """
    values = np.asarray(evals, dtype=np.float64)
    top = float(np.nanmax(values)) if values.size and np.isfinite(values).any() else float("nan")
    positive = values[np.isfinite(values) & (values > top * ZERO_RTOL)] if math.isfinite(top) and top > 0 else values[:0]
    if positive.size == 0:
        return np.full(bins + 1, np.nan), np.zeros(bins, dtype=np.int64)
    logs = np.log10(positive)  # the range from these same logs: math.log10 may differ by an ulp and drop an end
    lo, hi = float(logs.min()), float(logs.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(logs, bins=bins, range=(lo, hi))
    return edges, counts.astype(np.int64)


class WeightsProbe:
    """Weight-matrix spectra (heavy-tailed self-regularization): per-layer power-law alpha, MP spikes, norms; no data."""

    name = "weights"
    needs_data: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {
        "conv": "slices", "embeddings": False, "esd_scale": "N", "min_tail": 10, "ks": "two_sided",
        "randomize": True, "tw_level": 0.99, "seed": 0, "bins": 60, "solver": "gram",
    }

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """No pass over the data: one dense eigensolve per weight matrix (twice with ``randomize``)."""
        return {}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        bins = int(params["bins"])
        if bins < 1:
            raise ValueError(f"bins must be a positive integer, got {params['bins']}.")
        table, spectra = _analyze(
            ctx.model, conv=params["conv"], embeddings=bool(params["embeddings"]), esd_scale=params["esd_scale"],
            min_tail=int(params["min_tail"]), ks=params["ks"], randomize=bool(params["randomize"]),
            tw_level=float(params["tw_level"]), seed=int(params["seed"]), device=ctx.device, solver=params["solver"],
        )
        scalars = summarize(table)
        for record in table.itertuples(index=False):
            for key in PER_LAYER_KEYS:
                value = float(getattr(record, key))
                if math.isfinite(value) and not (key in ("n_spikes", "n_traps") and value < 0):
                    scalars[f"{record.name}/{key}"] = value  # NaN stays out: it marks the layer, not the result
        histograms = [log_histogram(spectra[name], bins) for name in table["name"]]
        arrays: dict[str, np.ndarray] = {
            "layer_names": table["name"].to_numpy(dtype=str),
            "layers": table["layer"].to_numpy(dtype=str),
            "kinds": table["kind"].to_numpy(dtype=str),
            "messages": table["message"].fillna("").to_numpy(dtype=str),
            "valid": table["valid"].to_numpy(dtype=bool),
            "esd_log10_edges": np.stack([h[0] for h in histograms]),
            "esd_counts": np.stack([h[1] for h in histograms]),
            "mp_ratio": (table["m"] / table["n"]).to_numpy(dtype=np.float64),
        }
        for key in ("alpha", "alpha_stderr", "xmin", "n_tail", "ks_distance", "alpha_hat", "spectral_norm",
                    "log_spectral_norm", "log_norm", "stable_rank", "mp_scale", "mp_edge", "mp_threshold",
                    "n_spikes", "n_traps", "n_evals", "rand_lambda_max", "rand_mp_edge", "rand_distance"):
            arrays[key] = table[key].to_numpy(dtype=np.float64)
        if scalars["n_fitted"] == 0:
            reasons = "; ".join(sorted(set(table["message"].dropna())))
            return Result(scalars=scalars, arrays=arrays, params=dict(params), valid=False,
                          message=f"no layer could be fitted at step {ctx.step}: {reasons}")
        return Result(scalars=scalars, arrays=arrays, params=dict(params))


PROBE = WeightsProbe()
