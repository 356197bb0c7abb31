"""The registered ``slices`` probe: at each checkpoint a 2-D loss surface (random filter-normalized or
Hessian axes) with its 1-D line, the interpolation from the run's first checkpoint (and its loss barrier),
and at the last checkpoint the PCA plane of the whole training path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from landscape.checkpoints import Checkpoint
from landscape.directions import NORMS
from landscape.evaluate import evaluate
from landscape.grid import Affine, Evaluator, check_span, check_steps, check_steps_2d, evaluate_grid
from landscape.params import preserved, trainable_parameters
from landscape.probe import ProbeContext, Result
from probes.slices.lines import (
    _detached,
    _touched,
    hessian_directions,
    interpolate,
    random_directions,
    slice_2d,
)
from probes.slices.trajectory import trajectory, trajectory_plane

__all__ = ["PROBE", "SlicesProbe"]

_PCA_ROW_OFFSET = 100_000
"""Row index offset under which the probe stores the rows of the trajectory plane (main grid below)."""
_LINE_ROW_OFFSET = 200_000
"""Row index offset of the probe's separate 1-D line (only when the grid has no y = 0 row)."""


def _interpolation_grid(params: Mapping[str, Any]) -> tuple[int, float]:
    """``interpolation_steps`` and ``interpolation_extend``, checked to put grid points on both checkpoints."""
    steps = check_steps(params["interpolation_steps"], "interpolation_steps")
    extend = float(params["interpolation_extend"])
    spacing = (1.0 + 2.0 * extend) / (steps - 1)
    if not math.isfinite(extend) or extend < 0 or abs(extend / spacing - round(extend / spacing)) > 1e-9:
        raise ValueError(f"interpolation_steps={steps} with interpolation_extend={extend} puts no grid point "
                         "on the two checkpoints (x = 0 and x = 1); choose them so that extend / spacing is "
                         "a whole number, e.g. 25 steps with extend 0.25.")
    return steps, extend


def _barrier(x: np.ndarray, loss: np.ndarray) -> float:
    """How far the loss rises between the two ends of an interpolation (0 ≤ x ≤ 1) above the higher end:
    max over the segment of loss(x) − max(loss(0), loss(1)), at least 0 (the loss barrier of linear mode
    connectivity; 0 when the path never climbs above its ends)."""
    inside = (x >= 0.0) & (x <= 1.0)
    ends = [loss[np.argmin(np.abs(x - end))] for end in (0.0, 1.0)]
    return float(max(0.0, np.max(loss[inside]) - max(ends)))


def _probe_span(span: object) -> tuple[float, float, float, float]:
    return check_span(list(span) if isinstance(span, (list, tuple)) else span, 2)  # type: ignore[return-value]


class SlicesProbe:
    """2-D loss surface around each checkpoint (random filter-normalized or Hessian axes), its 1-D line
    along the first axis, the interpolation from the first checkpoint to this one (``interp_*``, with the
    scalar ``interp_barrier``), and at the last checkpoint the PCA plane of the whole training path.

    Directions are drawn with the same seed at every checkpoint and normalized to that checkpoint's
    weights. ``directions="hessian"`` uses the top-2 Hessian eigenvectors instead: unit vectors (so the
    span is a distance in parameter space), with ``norm``, ``ignore`` and ``orthogonal`` unused, since
    rescaling parts of an eigenvector would make it no eigenvector. The 1-D line is the grid's y = 0 row
    when the grid has one (odd ``steps``), else an extra line of ``steps`` points. With a run store, the
    main grid's finished rows are saved as they go (the trajectory plane's too, under row indices from
    100,000), so an interrupted probe resumes.
    """

    name = "slices"
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 21,
        "span": 1.0,
        "norm": "filter",
        "ignore": "biasbn",
        "orthogonal": True,
        "seed": 0,
        "directions": "random",
        "trajectory": True,
        "trajectory_steps": 21,
        "trajectory_margin": 0.2,
        "interpolation": True,
        "interpolation_steps": 25,
        "interpolation_extend": 0.25,
    }

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """Loss evaluations at every grid point (the plane, its centre line, the interpolation and, at the
        last checkpoint, the trajectory plane) over the train data, as many over test data; Hessian axes add
        Lanczos products."""
        p = {**self.defaults, **params}
        steps = p["steps"]
        nx, ny = (steps, steps) if isinstance(steps, int) else tuple(steps)
        forward = nx * ny + nx + 1
        if p["interpolation"]:
            forward += int(p["interpolation_steps"])
        if p["trajectory"]:
            t = p["trajectory_steps"]
            forward += (t * t if isinstance(t, int) else t[0] * t[1]) / 2  # once per run, spread over checkpoints
        hvp = 60.0 if p["directions"] == "hessian" else 0.0
        return {"forward": float(forward), "hvp": hvp}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        if params["directions"] not in ("random", "hessian"):
            raise ValueError(f"directions must be 'random' or 'hessian', got {params['directions']!r}.")
        if params["norm"] not in NORMS:
            raise ValueError(f"norm must be one of 'filter', 'layer', 'model' or None, got {params['norm']!r}.")
        steps = check_steps_2d(tuple(params["steps"]) if isinstance(params["steps"], list) else params["steps"])
        span = _probe_span(params["span"])
        if params["interpolation"]:
            _interpolation_grid(params)
        model = ctx.model
        if not all(bool(torch.isfinite(p).all()) for p in trainable_parameters(model).values()):
            return Result.invalid(f"the weights hold NaN or infinite values at step {ctx.step}.", dict(params))
        with preserved(model):
            center = evaluate(model, ctx.loss_fn, ctx.train).loss
        if not math.isfinite(center):
            return Result.invalid(f"loss is {center} at step {ctx.step}; the landscape is undefined there.",
                                  dict(params))
        if params["directions"] == "random":
            dirs = random_directions(model, 2, norm=params["norm"], ignore=params["ignore"], seed=params["seed"],
                                     orthogonal=params["orthogonal"])
        else:
            with preserved(model):
                dirs = hessian_directions(model, ctx.loss_fn, ctx.train, 2, seed=params["seed"])
        surface = slice_2d(model, ctx.loss_fn, ctx.train, directions=dirs, span=span, steps=steps,
                           test_data=ctx.test, partial=ctx.partial, progress=ctx.progress)
        arrays: dict[str, np.ndarray] = {"x": surface.x, "y": surface.y, "loss": surface.loss}
        for key in ("accuracy", "test_loss", "test_accuracy"):
            value = getattr(surface, key)
            if value is not None:
                arrays[key] = value
        zero_rows = np.flatnonzero(surface.y == 0.0)
        keys = ("loss", "accuracy", "test_loss", "test_accuracy")
        if len(zero_rows):
            j = int(zero_rows[0])
            line = {k: getattr(surface, k)[j] for k in keys if getattr(surface, k) is not None}
        else:
            evaluator = Evaluator(model, ctx.loss_fn, ctx.train, ctx.test)
            with preserved(model):
                origin, moving = _touched(_detached(model), dirs[:1])
                row = evaluate_grid(evaluator, Affine(model, origin, moving), surface.x, None,
                                    partial=ctx.partial, row_offset=_LINE_ROW_OFFSET, progress=ctx.progress,
                                    label="line")
            line = {k: v[0] for k, v in row.items()}
        arrays["line_x"] = surface.x
        arrays.update({f"line_{k}": v for k, v in line.items()})
        finite = surface.loss[np.isfinite(surface.loss)]
        scalars = {"loss_center": center,
                   "loss_min": float(finite.min()) if finite.size else float("nan"),
                   "loss_max": float(finite.max()) if finite.size else float("nan")}
        checkpoints = sorted(ctx.checkpoints)
        if (params["interpolation"] and checkpoints and ctx.load_state is not None
                and ctx.step != checkpoints[0].step):
            interp = self._interpolation(ctx, checkpoints[0], params)
            arrays.update(interp)
            scalars["interp_barrier"] = _barrier(interp["interp_x"], interp["interp_loss"])
        if (params["trajectory"] and len(checkpoints) >= 3 and ctx.load_state is not None
                and ctx.step == checkpoints[-1].step):
            arrays.update(self._trajectory(ctx, checkpoints, params))
        return Result(scalars=scalars, arrays=arrays, params=dict(params))

    @staticmethod
    def _interpolation(ctx: ProbeContext, first: Checkpoint, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The straight line from the first checkpoint (x = 0) to this one (x = 1), extended on both sides."""
        load = ctx.load_state
        assert load is not None
        steps, extend = _interpolation_grid(params)
        line = interpolate(lambda: load(first), ctx.model, ctx.loss_fn, ctx.train, model=ctx.model,
                           steps=steps, extend=(extend, extend), test_data=ctx.test,
                           progress=ctx.progress)
        out = {"interp_x": line.x, "interp_loss": line.loss,
               "interp_from_step": np.array([first.step], dtype=np.int64)}
        for key in ("accuracy", "test_loss", "test_accuracy"):
            value = getattr(line, key)
            if value is not None:
                out[f"interp_{key}"] = value
        return out

    @staticmethod
    def _trajectory(ctx: ProbeContext, checkpoints: list[Checkpoint], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        load = ctx.load_state
        assert load is not None
        items: list[object] = [(lambda c=c: load(c)) for c in checkpoints[:-1]] + [ctx.model]
        path = trajectory(items, reference=-1, n_components=2, model=ctx.model, seed=params["seed"])
        steps = params["trajectory_steps"]
        surface = trajectory_plane(
            ctx.model, ctx.loss_fn, ctx.train, path, steps=tuple(steps) if isinstance(steps, list) else steps,
            margin=params["trajectory_margin"], partial=ctx.partial, row_offset=_PCA_ROW_OFFSET,
            progress=ctx.progress,
        )
        out = {"pca_x": surface.x, "pca_y": surface.y, "pca_loss": surface.loss,
               "path_x": path.coords[:, 0], "path_y": path.coords[:, 1],
               "path_steps": np.array([c.step for c in checkpoints], dtype=np.int64),
               "explained_variance": path.explained_variance}
        if surface.accuracy is not None:
            out["pca_accuracy"] = surface.accuracy
        return out


PROBE = SlicesProbe()
