"""1-D lines and 2-D planes through parameter space (Li et al. 2018) and the straight line between two
models (Goodfellow et al. 2015).

A slice is the sample-weighted mean loss (and accuracy for class targets) along ``θ + x·d`` or over the
plane ``θ + x·d1 + y·d2`` around the model's weights ``θ``, with seeded filter-normalized random
directions (:mod:`landscape.directions`) or directions given by the caller (e.g. Hessian eigenvectors,
see :func:`hessian_directions`). :func:`interpolate` follows ``lerp(θ_A, θ_B, x)`` of every
floating-point state entry instead. The grids run on the in-place engine of :mod:`landscape.grid`; the
model is left exactly as it was (weights, buffers, train/eval modes and ``.grad``, bit for bit).
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
from landscape.data import Batches, as_batches
from landscape.directions import check_directions
from landscape.directions import random_directions as _random_directions
from landscape.evaluate import LossFn
from landscape.grid import (
    Affine,
    Evaluator,
    Lerp,
    axis,
    check_model,
    check_span,
    check_steps,
    check_steps_2d,
    device_of,
    evaluate_grid,
)
from landscape.params import Named, preserved, trainable_parameters
from landscape.probe import PartialRows

__all__ = ["Slice", "Surface", "hessian_directions", "interpolate", "random_directions", "slice_1d", "slice_2d"]


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Slice:
    """Loss (and accuracy) along a line: ``loss[i]`` at ``x[i]``."""

    x: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    direction: Named | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Surface:
    """Loss over a plane: ``loss[j, i]`` is the loss at ``θ + x[i]·d1 + y[j]·d2`` (shape ``[ny, nx]``).

    ``points`` holds plane coordinates of models drawn on it (the three models of
    :func:`probes.slices.plane`, the checkpoints of a trajectory), shape ``[m, 2]``, or None.
    """

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    directions: list[Named] | None = field(default=None, repr=False)
    points: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------- helpers
def _batches(model: nn.Module, data: object, name: str) -> Batches:
    return as_batches(data, device=device_of(model), name=name)


def _detached(model: nn.Module) -> Named:
    return {k: p.detach().clone() for k, p in trainable_parameters(model).items()}


def _touched(origin: Named, directions: Sequence[Named]) -> tuple[Named, list[Named]]:
    """Drop all-zero direction tensors (e.g. biases with ``ignore="biasbn"``) and the origin entries no
    direction moves: they cost a write per point and change nothing."""
    kept = [{k: t for k, t in d.items() if bool(t.any())} for d in directions]
    names = {k for d in kept for k in d}
    return {k: v for k, v in origin.items() if k in names}, kept


def _state_of(item: object, carrier: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """The full state (params and buffers) of a module, a state dict, a checkpoint path or a zero-arg
    callable returning one of these, checked against (and read through) ``carrier``."""
    if callable(item) and not isinstance(item, nn.Module):
        item = item()
    if isinstance(item, Checkpoint):
        item = item.path
    with preserved(carrier):
        if isinstance(item, nn.Module):
            load_into(carrier, item.state_dict(), what)
        elif isinstance(item, Mapping):
            load_into(carrier, item, what)
        elif isinstance(item, (str, Path)):
            load_checkpoint(item, carrier)
        else:
            raise TypeError(f"{what} must be a model, a state dict or a checkpoint path, got {type(item).__name__}.")
        return {k: v.detach().clone() for k, v in carrier.state_dict().items()}


def _carrier(items: Sequence[object], model: nn.Module | None, what: str) -> nn.Module:
    if model is not None:
        return check_model(model, "model")
    for item in items:
        if isinstance(item, nn.Module):
            return check_model(item, what)
    raise ValueError(f"{what} holds no torch.nn.Module to evaluate with; pass model= (the architecture to load "
                     "the state dicts or checkpoints into).")


# ------------------------------------------------------------------------------------------- public API
def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
    orthogonal: bool = True,
) -> list[Named]:
    """``n`` seeded random directions over the trainable parameters, filter-normalized by default and
    orthogonal (see :mod:`landscape.directions` for the exact normalization and ``ignore`` rules)."""
    return _random_directions(check_model(model), n, norm=norm, ignore=ignore, seed=seed, orthogonal=orthogonal)


def slice_1d(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    direction: Mapping[str, torch.Tensor] | None = None,
    span: object = (-1.0, 1.0),
    steps: int = 51,
    seed: int = 0,
    test_data: object | None = None,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
    progress: bool = False,
) -> Slice:
    """Loss along ``θ + x·d`` for ``x`` in ``span`` (``steps`` points). Without ``direction``, ``d`` is
    the first seeded random direction (the x-axis of :func:`slice_2d` with the same seed and norm)."""
    model = check_model(model)
    n = check_steps(steps)
    lo, hi = check_span(span, 1)
    train = _batches(model, data, "data")
    test = None if test_data is None else _batches(model, test_data, "test_data")
    with preserved(model):
        params = trainable_parameters(model)
        if direction is None:
            d = _random_directions(model, 1, norm=norm, ignore=ignore, seed=seed)[0]
        else:
            if not isinstance(direction, Mapping):
                raise ValueError(f"direction must be a dict of named tensors, got {type(direction).__name__}.")
            d = check_directions(params, [direction], what="direction")[0]
        origin, moving = _touched(_detached(model), [d])
        evaluator = Evaluator(model, loss_fn, train, test, vectorize=vectorize, points_per_pass=points_per_pass,
                              autocast_dtype=autocast_dtype, factor_input=factor_input)
        x = axis(lo, hi, n)
        arrays = evaluate_grid(evaluator, Affine(model, origin, moving), x, None, progress=progress,
                               label="slice_1d")
    return Slice(x=x, loss=arrays["loss"][0], accuracy=_row0(arrays, "accuracy"),
                 test_loss=_row0(arrays, "test_loss"), test_accuracy=_row0(arrays, "test_accuracy"), direction=d)


def _row0(arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    return arrays[key][0] if key in arrays else None


def _surface(arrays: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, directions: list[Named],
             points: np.ndarray | None = None) -> Surface:
    return Surface(x=x, y=y, loss=arrays["loss"], accuracy=arrays.get("accuracy"), test_loss=arrays.get("test_loss"),
                   test_accuracy=arrays.get("test_accuracy"), directions=directions, points=points)


def _plane_grid(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    origin: Named,
    directions: list[Named],
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_data: object | None,
    partial: PartialRows | None,
    row_offset: int,
    progress: bool,
    vectorize: bool | str,
    points_per_pass: int | None,
    autocast_dtype: torch.dtype | None,
    factor_input: bool | str,
    label: str,
) -> dict[str, np.ndarray]:
    train = _batches(model, data, "data")
    test = None if test_data is None else _batches(model, test_data, "test_data")
    evaluator = Evaluator(model, loss_fn, train, test, vectorize=vectorize, points_per_pass=points_per_pass,
                          autocast_dtype=autocast_dtype, factor_input=factor_input)
    return evaluate_grid(evaluator, Affine(model, origin, directions), x, y, partial=partial,
                         row_offset=row_offset, progress=progress, label=label)


def slice_2d(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    directions: Sequence[Mapping[str, torch.Tensor]] | None = None,
    span: object = (-1.0, 1.0, -1.0, 1.0),
    steps: int | tuple[int, int] = (51, 51),
    seed: int = 0,
    test_data: object | None = None,
    partial: PartialRows | None = None,
    progress: bool = False,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    orthogonal: bool = True,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
    row_offset: int = 0,
) -> Surface:
    """Loss over the plane ``θ + x·d1 + y·d2``: ``loss[j, i]`` at ``(x[i], y[j])``.

    ``directions`` (two dicts of named tensors, e.g. Hessian eigenvectors) are used exactly as given;
    without them two seeded random directions are drawn (``norm``, ``ignore``, ``orthogonal``).
    ``steps`` is ``(steps_x, steps_y)`` or one integer; ``span`` is ``(x_lo, x_hi, y_lo, y_hi)``, one
    ``(lo, hi)`` pair for both axes, or a number ``s`` for ``(-s, s)``. With ``partial`` every finished
    row is saved (under index ``row_offset + j``) and a re-run resumes from the saved rows.
    """
    model = check_model(model)
    nx, ny = check_steps_2d(steps)
    x_lo, x_hi, y_lo, y_hi = check_span(span, 2)
    with preserved(model):
        params = trainable_parameters(model)
        if directions is None:
            dirs = _random_directions(model, 2, norm=norm, ignore=ignore, seed=seed, orthogonal=orthogonal)
        else:
            dirs = check_directions(params, directions)
            if len(dirs) != 2:
                raise ValueError(f"directions must hold exactly 2 directions for a plane, got {len(dirs)}.")
        origin, moving = _touched(_detached(model), dirs)
        x, y = axis(x_lo, x_hi, nx), axis(y_lo, y_hi, ny)
        arrays = _plane_grid(model, loss_fn, data, origin, moving, x, y, test_data=test_data, partial=partial,
                             row_offset=row_offset, progress=progress, vectorize=vectorize,
                             points_per_pass=points_per_pass, autocast_dtype=autocast_dtype,
                             factor_input=factor_input, label="slice_2d")
    return _surface(arrays, x, y, dirs)


def interpolate(
    model_a: object,
    model_b: object,
    loss_fn: LossFn,
    data: object,
    *,
    steps: int = 51,
    extend: tuple[float, float] = (0.0, 0.0),
    model: nn.Module | None = None,
    test_data: object | None = None,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Slice:
    """Loss along the straight line from model A (x = 0) to model B (x = 1), Goodfellow et al. 2015;
    ``x`` runs from ``-extend[0]`` to ``1 + extend[1]``.

    A and B may be modules, state dicts, checkpoint paths or zero-argument callables returning one.
    Every floating-point state entry is interpolated with ``torch.lerp`` (exactly A at 0 and B at 1,
    BatchNorm statistics included, so the end points give the two models' own losses); buffers use the
    coefficient clipped to [0, 1] beyond the ends. The evaluation runs on ``model`` (default: A or B,
    whichever is a module), which is left as it was.
    """
    carrier = _carrier([model_a, model_b], model, "model_a/model_b")
    n = check_steps(steps)
    if not (isinstance(extend, Sequence) and len(extend) == 2):
        raise ValueError(f"extend must be a pair (before, after) of non-negative numbers, got {extend!r}.")
    before, after = (float(e) for e in extend)
    if not (math.isfinite(before) and math.isfinite(after)) or before < 0 or after < 0:
        raise ValueError(f"extend must be a pair (before, after) of non-negative numbers, got {extend!r}.")
    state_a = _state_of(model_a, carrier, "model_a")
    state_b = _state_of(model_b, carrier, "model_b")
    train = _batches(carrier, data, "data")
    test = None if test_data is None else _batches(carrier, test_data, "test_data")
    x = np.linspace(-before, 1.0 + after, n)
    for end in (0.0, 1.0):  # the end points are the two models exactly when the grid passes through them
        x[np.abs(x - end) < 1e-12 * (1.0 + before + after)] = end
    with preserved(carrier):
        load_into(carrier, state_a, "model_a")
        evaluator = Evaluator(carrier, loss_fn, train, test, vectorize=vectorize, points_per_pass=points_per_pass,
                              autocast_dtype=autocast_dtype)
        arrays = evaluate_grid(evaluator, Lerp(carrier, state_a, state_b), x, None, progress=progress,
                               label="interpolate")
    return Slice(x=x, loss=arrays["loss"][0], accuracy=_row0(arrays, "accuracy"),
                 test_loss=_row0(arrays, "test_loss"), test_accuracy=_row0(arrays, "test_accuracy"))


def hessian_directions(model: nn.Module, loss_fn: LossFn, data: object, n: int = 2, *, seed: int = 0) -> list[Named]:
    """The top-``n`` Hessian eigenvectors (unit norm, largest algebraic eigenvalue first) as directions."""
    from probes import hessian

    eigen = hessian.eigenvalues(model, loss_fn, data, k=n, return_vectors=True, seed=seed)
    if eigen.vectors is None or len(eigen.vectors) < n:
        raise RuntimeError(f"hessian.eigenvalues returned {0 if eigen.vectors is None else len(eigen.vectors)} "
                           f"eigenvectors, {n} were asked for.")
    return [dict(v) for v in eigen.vectors[:n]]
