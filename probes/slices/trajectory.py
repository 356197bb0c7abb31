"""Planes through models: the plane through three models (mode connectivity, Garipov et al. 2018) and the
PCA plane of a training trajectory.

:func:`plane` takes model 0 as origin and the unit axes ``e1 ∝ θ1 − θ0``, ``e2 ∝`` the part of
``θ2 − θ0`` orthogonal to ``e1``. :func:`trajectory` is the uncentered PCA (SVD) of the path
``θ_t − θ_ref``, whose top right-singular vectors span the best plane through ``θ_ref``;
:func:`trajectory_plane` evaluates the loss over that plane around the path's coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape.checkpoints import Checkpoint, load_checkpoint, load_into
from landscape.directions import check_directions
from landscape.evaluate import LossFn
from landscape.grid import axis, check_model, check_steps_2d, device_of
from landscape.params import Named, preserved, trainable_parameters
from landscape.probe import PartialRows
from probes.slices.lines import Surface, _carrier, _detached, _plane_grid, _state_of, _surface

__all__ = ["Trajectory", "plane", "trajectory", "trajectory_plane"]


@dataclass(frozen=True)
class Trajectory:
    """PCA of a training path: ``coords[t]`` are the coordinates of ``θ_t − θ_ref`` on the unit
    ``directions``; ``explained_variance[k] = s_k² / Σ s²`` (uncentered, see :func:`trajectory`)."""

    coords: np.ndarray
    explained_variance: np.ndarray
    singular_values: np.ndarray
    directions: list[Named] = field(repr=False)
    origin: Named = field(repr=False)
    reference: int = -1


def _box(points: np.ndarray, steps: tuple[int, int], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes covering ``points`` (and the origin) with ``margin`` × the extent added on each side."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a non-negative number (fraction of the extent), got {margin!r}.")
    lo = np.minimum(points.min(axis=0), 0.0)
    hi = np.maximum(points.max(axis=0), 0.0)
    extent = hi - lo
    extent = np.where(extent > 0, extent, max(float(extent.max()), 1e-12))
    lo, hi = lo - margin * extent, hi + margin * extent
    return axis(lo[0], hi[0], steps[0]), axis(lo[1], hi[1], steps[1])


def _sub(a: Named, b: Named) -> Named:
    return {k: a[k] - b[k] for k in a}


def _dot(a: Named, b: Named) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def plane(
    models_3: Sequence[object],
    loss_fn: LossFn,
    data: object,
    *,
    steps: int | tuple[int, int] = (25, 25),
    margin: float = 0.2,
    model: nn.Module | None = None,
    test_data: object | None = None,
    partial: PartialRows | None = None,
    progress: bool = False,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
) -> Surface:
    """The plane through three models (the mode-connectivity view of Garipov et al. 2018).

    Origin: model 0. Axes (unit vectors, so coordinates are distances in parameter space):
    ``e1 = (θ1 − θ0)/‖θ1 − θ0‖`` and ``e2`` = the part of ``θ2 − θ0`` orthogonal to ``e1``, normalized.
    ``Surface.points`` holds the three models' coordinates ``(0, 0)``, ``(‖θ1 − θ0‖, 0)``,
    ``(⟨θ2 − θ0, e1⟩, ‖θ2 − θ0 − ⟨θ2 − θ0, e1⟩e1‖)``; the grid covers them with ``margin`` × the extent
    on each side. Only trainable parameters move; buffers (BatchNorm statistics) stay those of model 0.
    """
    if isinstance(models_3, (str, Path, Mapping, nn.Module)) or len(models_3) != 3:
        raise ValueError("models_3 must be a list of exactly 3 models, state dicts or checkpoint paths.")
    carrier = _carrier(models_3, model, "models_3")
    grid_steps = check_steps_2d(steps)
    states = [_state_of(m, carrier, f"models_3[{i}]") for i, m in enumerate(models_3)]
    names = list(trainable_parameters(carrier))
    thetas = [{k: s[k] for k in names} for s in states]
    u, v = _sub(thetas[1], thetas[0]), _sub(thetas[2], thetas[0])
    u_norm = math.sqrt(_dot(u, u))
    # Differences below ~100 rounding units of the weights are indistinguishable from rounding noise.
    resolution = 100 * torch.finfo(next(iter(thetas[0].values())).dtype).eps
    if u_norm <= resolution * math.sqrt(_dot(thetas[1], thetas[1])):
        raise ValueError("models_3[0] and models_3[1] have the same parameters; the plane is undefined.")
    e1 = {k: (t.double() / u_norm).to(t.dtype) for k, t in u.items()}
    along = _dot(v, e1)
    w = {k: v[k].double() - along * e1[k].double() for k in v}
    w_norm = math.sqrt(_dot(w, w))
    if w_norm <= resolution * math.sqrt(_dot(thetas[2], thetas[2])):
        raise ValueError("the three models lie on one line (or coincide); the plane through them is undefined.")
    e2 = {k: (t / w_norm).to(v[k].dtype) for k, t in w.items()}
    points = np.array([[0.0, 0.0], [u_norm, 0.0], [along, w_norm]])
    x, y = _box(points, grid_steps, margin)
    device = device_of(carrier)
    dirs = [{k: t.to(device) for k, t in e1.items()}, {k: t.to(device) for k, t in e2.items()}]
    with preserved(carrier):
        load_into(carrier, states[0], "models_3[0]")
        arrays = _plane_grid(carrier, loss_fn, data, _detached(carrier), dirs, x, y, test_data=test_data,
                             partial=partial, row_offset=0, progress=progress, vectorize=vectorize,
                             points_per_pass=points_per_pass, autocast_dtype=autocast_dtype,
                             factor_input=factor_input, label="plane")
    return _surface(arrays, x, y, dirs, points)


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
_NEGLIGIBLE = 1e-12
"""A PCA component with s_k² below this fraction of Σ s² is rounding noise (float64 Gram matrix)."""


def trajectory(
    models_or_checkpoints: Sequence[object],
    *,
    reference: int = -1,
    n_components: int = 2,
    model: nn.Module | None = None,
    seed: int = 0,
) -> Trajectory:
    """PCA of a training path: SVD of the matrix of ``θ_t − θ_ref`` (one row per checkpoint).

    The SVD is *uncentered*: the slice plane must pass through ``θ_ref`` (its origin), and the best plane
    through ``θ_ref`` for the path is spanned by the top right-singular vectors of ``θ_t − θ_ref``.
    ``explained_variance[k] = s_k² / Σ_i s_i²``. Signs are fixed so the first checkpoint has a
    non-negative coordinate on each axis. When the path spans fewer than ``n_components`` dimensions
    (e.g. a straight line; components below 1e-12 of the total count as absent), the missing axes are
    seeded random unit directions orthogonal to the others, with explained variance 0.

    Items: modules, state dicts, checkpoint paths, :class:`~landscape.checkpoints.Checkpoint` objects,
    or zero-argument callables returning one (loaded one at a time). The parameter names are the
    trainable parameters of ``model`` (or of the first module among the items); with state dicts only,
    every floating-point entry except BatchNorm running statistics.
    """
    items = list(models_or_checkpoints)
    if len(items) < 2:
        raise ValueError(f"models_or_checkpoints must hold at least 2 models or checkpoints, got {len(items)}.")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}.")
    if not isinstance(reference, int) or not -len(items) <= reference < len(items):
        raise ValueError(f"reference must index models_or_checkpoints (length {len(items)}), got {reference!r}.")
    ref = reference % len(items)
    carrier = model if model is not None else next((m for m in items if isinstance(m, nn.Module)), None)

    def params_of(index: int) -> Named:
        item = items[index]
        if carrier is not None:
            state = _state_of(item, carrier, f"models_or_checkpoints[{index}]")
            names = list(trainable_parameters(carrier))
        else:
            if callable(item):
                item = item()
            if isinstance(item, Checkpoint):
                item = item.path
            state = load_checkpoint(item) if isinstance(item, (str, Path)) else item
            if not isinstance(state, Mapping):
                raise TypeError(f"models_or_checkpoints[{index}] must be a model, a state dict or a checkpoint "
                                f"path, got {type(state).__name__}.")
            names = [k for k, v in state.items() if v.is_floating_point() and not k.endswith(_RUNNING_STATS)]
        return {k: state[k].detach().to("cpu") for k in names}

    origin = params_of(ref)
    rows: list[torch.Tensor] = []
    for t in range(len(items)):
        theta = origin if t == ref else params_of(t)
        if set(theta) != set(origin) or any(theta[k].shape != origin[k].shape for k in origin):
            raise ValueError(f"models_or_checkpoints[{t}] does not have the same parameters as the reference.")
        rows.append(torch.cat([(theta[k].double() - origin[k].double()).reshape(-1) for k in origin]))
    deltas = torch.stack(rows)  # [T, P] float64 on CPU
    gram = deltas @ deltas.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0.0), evecs[:, order]
    total = float(evals.sum())
    singular = evals.sqrt()
    vectors: list[torch.Tensor] = []
    real = [k < len(evals) and total > 0 and float(evals[k]) > _NEGLIGIBLE * total for k in range(n_components)]
    for k in range(n_components):
        if real[k]:
            vec = deltas.T @ evecs[:, k] / singular[k]
        else:  # the path has no k-th dimension: a seeded random axis orthogonal to the others
            gen = torch.Generator().manual_seed(seed + k)
            vec = torch.randn(deltas.shape[1], generator=gen, dtype=torch.float64)
            for other in vectors:
                vec -= (vec @ other) * other
            vec /= vec.norm()
        for other in vectors:  # re-orthogonalize against rounding
            vec -= (vec @ other) * other
        vec /= vec.norm()
        coords = deltas @ vec
        first = coords[0] if abs(float(coords[0])) > 0 else coords[int(coords.abs().argmax())]
        if float(first) < 0:
            vec = -vec
        vectors.append(vec)
    basis = torch.stack(vectors, dim=1)  # [P, k]
    coords = (deltas @ basis).numpy()
    explained = np.array([float(evals[k]) / total if real[k] else 0.0 for k in range(n_components)])
    sv = np.array([float(singular[k]) if real[k] else 0.0 for k in range(n_components)])
    directions = []
    for vec in vectors:
        d: Named = {}
        offset = 0
        for k, o in origin.items():
            d[k] = vec[offset : offset + o.numel()].reshape(o.shape).to(o.dtype)
            offset += o.numel()
        directions.append(d)
    return Trajectory(coords=coords, explained_variance=explained, singular_values=sv, directions=directions,
                      origin=origin, reference=ref)


def trajectory_plane(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    path: Trajectory,
    *,
    steps: int | tuple[int, int] = (21, 21),
    margin: float = 0.2,
    test_data: object | None = None,
    partial: PartialRows | None = None,
    row_offset: int = 0,
    progress: bool = False,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
) -> Surface:
    """The loss over the plane of the first two PCA axes of ``path``, through its reference point,
    covering the path's coordinates (``Surface.points``) with ``margin`` × the extent on each side.

    ``model`` supplies the architecture and the buffers (load the reference checkpoint into it for
    BatchNorm models); its trainable parameters are set to the reference point during the sweep.
    """
    model = check_model(model)
    if len(path.directions) < 2:
        raise ValueError("path must have at least 2 PCA components for a plane (trajectory(n_components=2)).")
    grid_steps = check_steps_2d(steps)
    params = trainable_parameters(model)
    if set(path.origin) != set(params):
        raise ValueError("path was computed for other parameter names than this model's trainable parameters.")
    dirs = check_directions(params, path.directions[:2], what="path.directions")
    points = np.asarray(path.coords[:, :2], dtype=np.float64)
    x, y = _box(points, grid_steps, margin)
    device = device_of(model)
    origin = {k: t.to(device=device, dtype=params[k].dtype) for k, t in path.origin.items()}
    with preserved(model):
        arrays = _plane_grid(model, loss_fn, data, origin, dirs, x, y, test_data=test_data, partial=partial,
                             row_offset=row_offset, progress=progress, vectorize=vectorize,
                             points_per_pass=points_per_pass, autocast_dtype=autocast_dtype,
                             factor_input=factor_input, label="trajectory")
    return _surface(arrays, x, y, dirs, points)
