"""Landscape slices of the ``slices`` probe: 2-D surfaces (random or PCA plane, with the training
trajectory), 1-D slices and the interpolation between checkpoints."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures._style import TEST_DASH, TRAIN_DASH, colors_for, empty_figure, finish, log_ticks

_METRIC_LABEL = {"loss": "train loss", "accuracy": "train accuracy", "test_loss": "test loss",
                 "test_accuracy": "test accuracy"}


def _bilinear(x: np.ndarray, y: np.ndarray, z: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """z (shape [len(y), len(x)]) interpolated bilinearly at points (px, py), clamped to the grid."""
    px = np.clip(px, x[0], x[-1])
    py = np.clip(py, y[0], y[-1])
    i = np.clip(np.searchsorted(x, px) - 1, 0, len(x) - 2)
    j = np.clip(np.searchsorted(y, py) - 1, 0, len(y) - 2)
    tx = (px - x[i]) / np.where(x[i + 1] > x[i], x[i + 1] - x[i], 1.0)
    ty = (py - y[j]) / np.where(y[j + 1] > y[j], y[j + 1] - y[j], 1.0)
    return ((1 - tx) * (1 - ty) * z[j, i] + tx * (1 - ty) * z[j, i + 1]
            + (1 - tx) * ty * z[j + 1, i] + tx * ty * z[j + 1, i + 1])


def surface_figure(arrays: Mapping[str, np.ndarray], *, metric: str = "loss", plane: str = "auto",
                   highlight_step: int | None = None, title: str | None = None, height: int = 540) -> go.Figure:
    """The loss (or accuracy) surface of a ``slices`` result: a 3D surface beside a contour map.

    ``metric`` is ``"loss"``, ``"accuracy"``, ``"test_loss"`` or ``"test_accuracy"``. ``plane`` picks the
    grid: ``"random"`` (``x``, ``y``, ``loss`` — the slice directions d1, d2 around the checkpoint, random
    and filter-normalized by default, ``loss[j, i]`` at θ + x[i]·d1 + y[j]·d2), ``"pca"`` (``pca_x``, ``pca_y``, ``pca_loss`` —
    the plane of the two main PCA directions of the training trajectory, with the trajectory
    ``path_x``, ``path_y``, ``path_steps`` drawn on both panels) or ``"auto"`` (PCA when present). Loss
    contours use log10 of the loss (labels show the loss itself); accuracy contours are linear.
    ``highlight_step`` marks the trajectory point nearest that step.
    """
    if metric not in _METRIC_LABEL:
        raise ValueError(f"metric must be one of {', '.join(_METRIC_LABEL)}, got {metric!r}.")
    if plane not in ("auto", "random", "pca"):
        raise ValueError(f"plane must be 'auto', 'random' or 'pca', got {plane!r}.")
    has_pca = "pca_x" in arrays and "pca_y" in arrays and f"pca_{metric}" in arrays
    use_pca = plane == "pca" or (plane == "auto" and has_pca)
    prefix = "pca_" if use_pca else ""
    xk, yk, zk = f"{prefix}x", f"{prefix}y", f"{prefix}{metric}"
    label = _METRIC_LABEL[metric]
    if not all(k in arrays for k in (xk, yk, zk)):
        what = "PCA-plane" if use_pca else "2-D"
        return empty_figure(f"This result has no {what} {label} grid.", title=title, height=height)
    x = np.asarray(arrays[xk], dtype=float)
    y = np.asarray(arrays[yk], dtype=float)
    z = np.asarray(arrays[zk], dtype=float)
    if z.shape != (len(y), len(x)):
        raise ValueError(f"arrays[{zk!r}] must have shape (len(y), len(x)) = {(len(y), len(x))}, got {z.shape}.")
    is_loss = "loss" in metric
    if use_pca:
        variance = np.asarray(arrays.get("explained_variance", []), dtype=float)
        names = [f"PC{i + 1}" + (f" ({variance[i]:.1%} of variance)" if i < variance.size else "") for i in range(2)]
    else:
        names = ["α (direction d₁)", "β (direction d₂)"]

    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "xy"}]], column_widths=[0.52, 0.48],
                        horizontal_spacing=0.06, subplot_titles=(f"{label.capitalize()} surface",
                                                                 f"{label.capitalize()} contours"
                                                                 + (" (log scale)" if is_loss else "")))
    value_fmt = ".4g" if is_loss else ".2%"
    colorscale = "Viridis" if is_loss else "Cividis"
    fig.add_trace(go.Surface(
        x=x, y=y, z=z, colorscale=colorscale, showscale=False, name=label,
        hovertemplate=f"{names[0]}: %{{x:.3f}}<br>{names[1]}: %{{y:.3f}}<br>{label}: %{{z:{value_fmt}}}<extra></extra>",
        contours=dict(z=dict(show=True, usecolormap=True, project=dict(z=True), width=1)),
    ), row=1, col=1)

    if is_loss:
        positive = np.where(z > 0, z, np.nan)
        shown = np.log10(positive)
        finite = shown[np.isfinite(shown)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        ticks = log_ticks(lo, hi)
        colorbar = dict(title=dict(text=label, side="right"), tickvals=[np.log10(t) for t in ticks],
                        ticktext=[f"{t:.3g}" for t in ticks], len=0.85)
    else:
        shown = z
        colorbar = dict(title=dict(text=label, side="right"), tickformat=".0%", len=0.85)
    fig.add_trace(go.Contour(
        x=x, y=y, z=shown, customdata=z, colorscale=colorscale, ncontours=24, colorbar=colorbar, name=label,
        contours=dict(coloring="heatmap", showlines=True), line=dict(width=0.6, color="rgba(255,255,255,0.5)"),
        hovertemplate=f"{names[0]}: %{{x:.3f}}<br>{names[1]}: %{{y:.3f}}<br>{label}: %{{customdata:{value_fmt}}}<extra></extra>",
    ), row=1, col=2)

    path_ok = use_pca and all(k in arrays for k in ("path_x", "path_y"))
    if path_ok:
        px = np.asarray(arrays["path_x"], dtype=float)
        py = np.asarray(arrays["path_y"], dtype=float)
        steps = np.asarray(arrays.get("path_steps", np.arange(len(px))), dtype=np.int64)
        pz = _bilinear(x, y, z, px, py)
        offset = 0.01 * (np.nanmax(z) - np.nanmin(z) or 1.0)
        hover = "step %{text}<extra>trajectory</extra>"
        fig.add_trace(go.Scatter3d(x=px, y=py, z=pz + offset, text=steps, mode="lines+markers", name="trajectory",
                                   line=dict(color="#e11d48", width=5), marker=dict(size=3, color="#e11d48"),
                                   hovertemplate=hover, showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=px, y=py, text=steps, mode="lines+markers", name="trajectory",
                                 line=dict(color="#e11d48", width=2.5), marker=dict(size=6, color="#e11d48",
                                                                                    line=dict(color="white", width=1)),
                                 hovertemplate=hover), row=1, col=2)
        if highlight_step is not None and len(steps):
            k = int(np.argmin(np.abs(steps - int(highlight_step))))
            fig.add_trace(go.Scatter(x=[px[k]], y=[py[k]], mode="markers", name=f"step {int(steps[k]):,}",
                                     marker=dict(symbol="star", size=16, color="#facc15",
                                                 line=dict(color="#111827", width=1.2)),
                                     hovertemplate=f"step {int(steps[k]):,}<extra>selected</extra>"), row=1, col=2)
    else:
        center_z = _bilinear(x, y, z, np.array([0.0]), np.array([0.0]))
        fig.add_trace(go.Scatter3d(x=[0.0], y=[0.0], z=center_z, mode="markers", name="checkpoint",
                                   marker=dict(size=5, color="#e11d48"), showlegend=False,
                                   hovertemplate="checkpoint (α = β = 0)<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="checkpoint",
                                 marker=dict(symbol="x", size=11, color="#e11d48", line=dict(width=1, color="white")),
                                 hovertemplate="checkpoint (α = β = 0)<extra></extra>"), row=1, col=2)

    fig.update_layout(scene=dict(xaxis_title=names[0].split(" (")[0], yaxis_title=names[1].split(" (")[0],
                                 zaxis_title=label, camera=dict(eye=dict(x=1.35, y=-1.35, z=0.85)),
                                 aspectmode="manual", aspectratio=dict(x=1, y=1, z=0.7)))
    fig.update_xaxes(title_text=names[0], row=1, col=2)
    fig.update_yaxes(title_text=names[1], row=1, col=2)
    fig = finish(fig, title, height)
    fig.update_layout(legend=dict(orientation="h", x=1.0, xanchor="right", y=-0.12, yanchor="top"),
                      margin=dict(l=20, r=20, t=80, b=70))
    return fig


def slice_curves(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 1-D slice of a ``slices`` result as ``{x, loss, accuracy, test_loss, test_accuracy}``.

    The stored line (``line_x``, ``line_loss``, ``line_accuracy``, and ``line_test_*`` when present) is
    used when it exists, unless the result has a test grid but no test line: then the row β = 0 of the
    2-D grids is used for train and test alike, so both curves lie along the same direction d1.
    """
    has_line = "line_x" in arrays and "line_loss" in arrays
    line_has_test = "line_test_loss" in arrays
    grid_has_test = "test_loss" in arrays and "x" in arrays and "y" in arrays
    if has_line and (line_has_test or not grid_has_test):
        curves = {"x": arrays["line_x"], "loss": arrays["line_loss"]}
        for key, stored in (("accuracy", "line_accuracy"), ("test_loss", "line_test_loss"),
                            ("test_accuracy", "line_test_accuracy")):
            if stored in arrays:
                curves[key] = arrays[stored]
        return {k: np.asarray(v, dtype=float) for k, v in curves.items()}
    if "x" in arrays and "y" in arrays and "loss" in arrays:
        y = np.asarray(arrays["y"], dtype=float)
        row = int(np.argmin(np.abs(y)))
        curves = {"x": np.asarray(arrays["x"], dtype=float)}
        for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
            if key in arrays:
                curves[key] = np.asarray(arrays[key], dtype=float)[row]
        return curves
    return {}


def interpolation_curves(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The interpolation of a ``slices`` result (from the run's first checkpoint at x = 0 to this one at x = 1)
    as ``{x, loss, accuracy, test_loss, test_accuracy}``; empty when the result holds none."""
    if "interp_x" not in arrays or "interp_loss" not in arrays:
        return {}
    curves = {"x": arrays["interp_x"]}
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        if f"interp_{key}" in arrays:
            curves[key] = arrays[f"interp_{key}"]
    return {k: np.asarray(v, dtype=float) for k, v in curves.items()}


def slice_figure(curves: Mapping[str, Mapping[str, np.ndarray]], *, colors: Mapping[str, str] | None = None,
                 x_title: str = "distance along the direction (α)", title: str | None = "1-D slice",
                 height: int = 420) -> go.Figure:
    """1-D slices or interpolations of several runs: loss (left axis) and accuracy (right axis).

    ``curves[name]`` holds ``x`` and ``loss`` and optionally ``accuracy``, ``test_loss``, ``test_accuracy``
    (e.g. :func:`slice_curves` of a stored result, or ``probes.slices.interpolate`` output). Train is solid,
    test dashed; accuracy curves are thinner and lighter.
    """
    names = [n for n, c in curves.items() if "x" in c and "loss" in c]
    if not names:
        return empty_figure("No 1-D slice in these results.", title=title, height=height)
    palette = colors_for(names, colors)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    any_accuracy = False
    for name in names:
        c = curves[name]
        x = np.asarray(c["x"], dtype=float)
        for key, split, dash, secondary in (("loss", "train", TRAIN_DASH, False), ("test_loss", "test", TEST_DASH, False),
                                            ("accuracy", "train", TRAIN_DASH, True),
                                            ("test_accuracy", "test", TEST_DASH, True)):
            if key not in c:
                continue
            label = f"{split} {'accuracy' if secondary else 'loss'}"
            any_accuracy |= secondary
            fig.add_trace(go.Scatter(
                x=x, y=np.asarray(c[key], dtype=float), mode="lines", name=f"{name} · {label}", legendgroup=name,
                line=dict(color=palette[name], dash=dash, width=1.4 if secondary else 2.4),
                opacity=0.55 if secondary else 1.0,
                hovertemplate=f"<b>{name}</b><br>{x_title.split(' (')[0]}: %{{x:.3f}}<br>{label}: "
                              f"%{{y:{'.2%' if secondary else '.4g'}}}<extra></extra>",
            ), secondary_y=secondary)
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], secondary_y=True, tickmode="array",
                     tickvals=[0, 0.25, 0.5, 0.75, 1.0], showgrid=False, visible=any_accuracy)
    fig = finish(fig, title, height)
    fig.update_layout(margin=dict(r=40))
    return fig
