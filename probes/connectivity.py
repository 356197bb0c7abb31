"""Mode connectivity: low-loss curves between two trained networks, and their loss barriers.

Garipov et al. 2018 ("Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs") and Draxler et al.
2018 find that two independently trained solutions, separated by a high barrier on the straight line,
are joined by simple curves along which the training loss stays low. With endpoints ``θ_a``, ``θ_b`` and a
trained control point ``θ_c``:

* quadratic Bézier curve: ``θ(t) = (1−t)² θ_a + 2t(1−t) θ_c + t² θ_b``;
* polygonal chain: ``θ(t) = (1−2t) θ_a + 2t θ_c`` for ``t < ½``, ``(2−2t) θ_c + (2t−1) θ_b`` after.

Both are written in these Bernstein forms, so ``θ(0)`` and ``θ(1)`` are the endpoints exactly. ``θ_c``
starts at the midpoint and is trained (Garipov et al., Sec. 3.2) by SGD on ``E_{t~U(0,1)} L(θ(t))``: each
step draws one t and takes a batch; the gradient reaches ``θ_c`` through the curve's coefficient of it.

The **barrier** of a path (Frankle et al. 2020; Entezari et al. 2022) is
``max_t [L(θ(t)) − ((1−t) L(θ_a) + t L(θ_b))]``: how far the loss rises above the straight interpolation of
the two endpoint losses (0 on the endpoints, so ≥ 0). Permutation alignment of the endpoints
(:func:`weight_matching`, from :mod:`probes.rebasin`) lowers the straight line's barrier.

Only the trainable parameters lie on the curve; other floating-point state (frozen parameters, buffers)
follows the straight line. BatchNorm: the running statistics of an interior point are unknown, so with
BatchNorm layers present, the curve is trained with batch statistics (BatchNorm in train mode, every other
module in eval mode) and at every evaluated point — both ends and every path — the running statistics
are recomputed by one pass over the training data (a cumulative average, as Garipov et al. do) before the
point is evaluated in eval mode. Without BatchNorm every module runs in eval mode.

This module registers no probe: connectivity compares two independently trained solutions, which one run's
checkpoints do not provide (the ``slices`` probe stores the straight line from a run's first checkpoint).
:meth:`Connectivity.to_result` turns a result into a store record for the dashboard.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from landscape.data import Batches, as_batches
from landscape.evaluate import LossFn, check_scalar_loss, evaluate
from landscape.probe import Result
from probes.rebasin import Alignment, check_same_architecture, permutation_spec, permute, weight_matching

__all__ = ["Alignment", "Connectivity", "PathLoss", "Realignment", "align", "barrier", "bezier_curve",
           "check_same_architecture", "curve_point", "linear_path", "permutation_spec", "permute", "polygonal_chain",
           "weight_matching"]

CURVES = ("bezier", "polychain")
Named = dict[str, torch.Tensor]


def curve_point(a: torch.Tensor, c: torch.Tensor, b: torch.Tensor, t: float, curve: str = "bezier") -> torch.Tensor:
    """The point at ``t ∈ [0, 1]`` of the Bézier curve or polygonal chain from ``a`` through control ``c`` to ``b``."""
    if curve == "bezier":
        return (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b
    if curve == "polychain":
        return (1 - 2 * t) * a + 2 * t * c if t < 0.5 else (2 - 2 * t) * c + (2 * t - 1) * b
    raise ValueError(f"curve must be one of {CURVES}, got {curve!r}.")


def barrier(t: np.ndarray, loss: np.ndarray) -> float:
    """``max_t [loss(t) − ((1−t)·loss(0) + t·loss(1))]`` over a grid from t = 0 to t = 1 (NaN if a loss is NaN)."""
    t, loss = np.asarray(t, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if t.ndim != 1 or t.shape != loss.shape or t[0] != 0.0 or t[-1] != 1.0:
        raise ValueError("barrier needs a grid of t from exactly 0 to exactly 1 and one loss per point.")
    return float(np.max(loss - ((1 - t) * loss[0] + t * loss[-1])))


@dataclass(frozen=True)
class PathLoss:
    """Loss (and accuracy when the targets are classes) along a path at ``t``, and its barrier."""

    t: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None
    barrier: float


@dataclass(frozen=True)
class Connectivity:
    """A trained curve and the straight line between the same endpoints, evaluated on the same grid.

    ``control`` is the trained middle point θ_c (named trainable tensors); ``train_loss`` the loss of
    each SGD step of its training, at that step's random ``train_t`` and batch.
    """

    curve: str
    t: np.ndarray
    curve_loss: np.ndarray
    curve_accuracy: np.ndarray | None
    line_loss: np.ndarray
    line_accuracy: np.ndarray | None
    curve_barrier: float
    line_barrier: float
    control: Named
    train_loss: np.ndarray
    train_t: np.ndarray
    params: dict[str, object] = field(default_factory=dict)

    def to_result(self, aligned: PathLoss | None = None) -> Result:
        """A store record (probe name ``connectivity``): scalars ``curve_barrier``, ``line_barrier`` (and
        ``aligned_line_barrier``), arrays ``t``, ``curve_loss``, ``line_loss``, ``train_loss``, the
        accuracies when known (and ``aligned_line_loss``/``aligned_line_accuracy``)."""
        scalars = {"curve_barrier": self.curve_barrier, "line_barrier": self.line_barrier}
        arrays: dict[str, np.ndarray] = {"t": self.t, "curve_loss": self.curve_loss, "line_loss": self.line_loss,
                                         "train_loss": self.train_loss}
        for key in ("curve_accuracy", "line_accuracy"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        if aligned is not None:
            if not np.array_equal(aligned.t, self.t):
                raise ValueError("the aligned line must be evaluated on the same t grid as the curve.")
            scalars["aligned_line_barrier"] = aligned.barrier
            arrays["aligned_line_loss"] = aligned.loss
            if aligned.accuracy is not None:
                arrays["aligned_line_accuracy"] = aligned.accuracy
        return Result(scalars=scalars, arrays=arrays, params={"curve": self.curve, **self.params})


# ------------------------------------------------------------------------------------------ endpoints


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


class _Endpoints:
    """Both endpoints' state, and a private copy of model A to evaluate points of a path with."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, data: object) -> None:
        check_same_architecture(model_a, model_b)
        self.loss_fn = loss_fn
        self.work = copy.deepcopy(model_a)
        device = next(self.work.parameters()).device
        self.a = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
        self.b = {k: v.detach().to(device) for k, v in model_b.state_dict().items()}
        self.trainable = [n for n, p in self.work.named_parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("model_a has no trainable parameters to put on a curve.")
        self.norms = _batch_norms(self.work)
        self.train = as_batches(data, device=device, name="data")

    def line_state(self, t: float) -> Named:
        """Every state entry on the straight line at t (integer entries from model A)."""
        return {k: torch.lerp(v, self.b[k], t) if v.is_floating_point() else v.clone() for k, v in self.a.items()}

    def write(self, point: Mapping[str, torch.Tensor], t: float) -> None:
        state = self.line_state(t)
        state.update({k: v.detach() for k, v in point.items()})
        self.work.load_state_dict(state)
        if self.norms:
            self.recompute_statistics()

    @torch.no_grad()
    def recompute_statistics(self) -> None:
        """BatchNorm running statistics of the current weights: a cumulative average over the training data."""
        momenta = [m.momentum for m in self.norms]
        self.work.eval()
        for m in self.norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        try:
            for x, _ in self.train:
                self.work(x)
        finally:
            for m, momentum in zip(self.norms, momenta):
                m.momentum = momentum
            self.work.eval()

    def measure(self, data: Batches) -> tuple[float, float | None]:
        self.work.eval()
        result = evaluate(self.work, self.loss_fn, data)
        return result.loss, result.accuracy


def _grid(n_points: int) -> np.ndarray:
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 3:
        raise ValueError(f"n_points must be an integer ≥ 3, got {n_points!r}.")
    return np.linspace(0.0, 1.0, n_points)


def _evaluate_path(ends: _Endpoints, points: Iterator[tuple[float, Mapping[str, torch.Tensor]]], t: np.ndarray,
                   data: Batches) -> PathLoss:
    losses, accuracies = [], []
    for value, point in points:
        ends.write(point, value)
        loss, accuracy = ends.measure(data)
        losses.append(loss)
        accuracies.append(accuracy)
    loss_arr = np.asarray(losses)
    acc = None if any(a is None for a in accuracies) else np.asarray(accuracies, dtype=np.float64)
    return PathLoss(t=t, loss=loss_arr, accuracy=acc, barrier=barrier(t, loss_arr))


def _line_points(ends: _Endpoints, t: np.ndarray) -> Iterator[tuple[float, Named]]:
    for value in t:
        yield float(value), {}


def _curve_points(ends: _Endpoints, control: Mapping[str, torch.Tensor], curve: str,
                  t: np.ndarray) -> Iterator[tuple[float, Named]]:
    for value in t:
        yield float(value), {n: curve_point(ends.a[n], control[n], ends.b[n], float(value), curve) for n in ends.trainable}


@contextmanager
def _training_modes(model: nn.Module, norms: list[nn.Module]) -> Iterator[None]:
    model.eval()
    for m in norms:
        m.train()
    try:
        yield
    finally:
        model.eval()


def linear_path(model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, data: object, *, n_points: int = 21,
                eval_data: object | None = None) -> PathLoss:
    """Loss and accuracy on the straight line from A (t = 0) to B (t = 1) and its barrier (see the module doc).

    ``eval_data`` (default: ``data``) is what the loss is measured on; ``data`` also recomputes BatchNorm
    statistics. Neither model is changed.
    """
    t = _grid(n_points)
    ends = _Endpoints(model_a, model_b, loss_fn, data)
    target = ends.train if eval_data is None else as_batches(eval_data, device=ends.train.device, name="eval_data")
    return _evaluate_path(ends, _line_points(ends, t), t, target)


def bezier_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    curve: str = "bezier",
    steps: int = 500,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int | None = 128,
    n_points: int = 21,
    seed: int = 0,
    eval_data: object | None = None,
) -> Connectivity:
    """Train the control point of a curve from A to B, then evaluate it and the straight line.

    ``curve``: ``"bezier"`` (quadratic Bézier) or ``"polychain"`` (one bend). ``steps`` SGD steps
    (``lr``, ``momentum``, ``weight_decay``) on batches of ``batch_size`` samples of ``data`` taken in a
    seeded shuffled order (None: the data's own batches), each at a fresh t ~ U(0, 1); ``steps=0`` leaves
    the control at the midpoint. Both paths are evaluated at ``n_points`` evenly spaced t on ``eval_data``
    (default: ``data``). Neither model is changed.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}, got {curve!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
    t = _grid(n_points)
    ends = _Endpoints(model_a, model_b, loss_fn, data)
    target = ends.train if eval_data is None else as_batches(eval_data, device=ends.train.device, name="eval_data")
    control = {n: torch.lerp(ends.a[n], ends.b[n], 0.5).requires_grad_(True) for n in ends.trainable}
    history, drawn = _train_control(ends, control, loss_fn, curve=curve, steps=steps, lr=lr, momentum=momentum,
                             weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    control = {n: v.detach() for n, v in control.items()}
    on_curve = _evaluate_path(ends, _curve_points(ends, control, curve, t), t, target)
    on_line = _evaluate_path(ends, _line_points(ends, t), t, target)
    params = {"steps": steps, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "batch_size": batch_size,
              "n_points": n_points, "seed": seed}
    return Connectivity(curve=curve, t=t, curve_loss=on_curve.loss, curve_accuracy=on_curve.accuracy,
                        line_loss=on_line.loss, line_accuracy=on_line.accuracy, curve_barrier=on_curve.barrier,
                        line_barrier=on_line.barrier, control=control, train_loss=history, train_t=drawn,
                        params=params)


@dataclass(frozen=True)
class Realignment:
    """Model B aligned to model A (:func:`weight_matching`) and the straight line A → B before and after."""

    alignment: Alignment
    before: PathLoss
    after: PathLoss


def align(model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, data: object, *, n_points: int = 21,
          max_sweeps: int = 100, seed: int = 0, eval_data: object | None = None) -> Realignment:
    """Permute B's hidden units to match A (Git Re-Basin weight matching, checked to keep B's function on
    ``data``) and measure the straight-line barrier before and after; ``alignment.model`` is the aligned B."""
    alignment = weight_matching(model_a, model_b, max_sweeps=max_sweeps, seed=seed, data=data)
    before = linear_path(model_a, model_b, loss_fn, data, n_points=n_points, eval_data=eval_data)
    after = linear_path(model_a, alignment.model, loss_fn, data, n_points=n_points, eval_data=eval_data)
    return Realignment(alignment, before, after)


def polygonal_chain(model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, data: object,
                    **kwargs: object) -> Connectivity:
    """:func:`bezier_curve` with ``curve="polychain"`` (a polygonal chain with one trained bend)."""
    return bezier_curve(model_a, model_b, loss_fn, data, curve="polychain", **kwargs)  # type: ignore[arg-type]


def _train_control(ends: _Endpoints, control: Named, loss_fn: LossFn, *, curve: str, steps: int, lr: float,
                   momentum: float, weight_decay: float, batch_size: int | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    from torch.func import functional_call

    if steps == 0:
        return np.zeros(0), np.zeros(0)
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = ends.train.merged()
    optimizer = torch.optim.SGD(list(control.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    size = int(x_all.shape[0]) if batch_size is None else int(batch_size)
    order = torch.randperm(len(x_all), generator=generator).to(x_all.device)
    history, drawn = np.zeros(steps), np.zeros(steps)
    cursor = 0
    with _training_modes(ends.work, ends.norms):
        for step in range(steps):
            if cursor + size > len(order):
                order, cursor = torch.randperm(len(x_all), generator=generator).to(x_all.device), 0
            index = order[cursor: cursor + size] if batch_size is not None else order
            cursor += size
            t = float(torch.rand((), generator=generator, dtype=torch.float64))
            state = ends.line_state(t)
            state.update({n: curve_point(ends.a[n], control[n], ends.b[n], t, curve) for n in ends.trainable})
            loss = check_scalar_loss(loss_fn(functional_call(ends.work, state, (x_all[index],)), y_all[index]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history[step], drawn[step] = float(loss.detach()), t
    return history, drawn
