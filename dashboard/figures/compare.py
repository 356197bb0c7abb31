"""Two results side by side on shared scales, with their difference: slices surfaces and Hessian densities.

"A" and "B" are any two results of one probe — two runs at a checkpoint, or two checkpoints of one run.
Both panels of a pair share one colour scale (or one y range), so equal colours mean equal values; the
third panel is B − A on A's grid (B resampled bilinearly when the grids differ; NaN outside B's grid).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures._style import empty_figure, finish
from dashboard.figures.spectra import _DENSITY_DECADES
from dashboard.figures.surfaces import _METRIC_LABEL, _bilinear, contour_trace, contour_values, plane_names


def resample(x: np.ndarray, y: np.ndarray, z: np.ndarray, to_x: np.ndarray, to_y: np.ndarray) -> np.ndarray:
    """``z`` (shape [len(y), len(x)]) bilinearly interpolated onto the grid ``to_x`` × ``to_y``; NaN outside
    the grid of ``z`` (no extrapolation). Equal grids are returned unchanged."""
    if np.array_equal(x, to_x) and np.array_equal(y, to_y):
        return z
    gx, gy = np.meshgrid(to_x, to_y)
    out = _bilinear(x, y, z, gx.ravel(), gy.ravel()).reshape(gx.shape)
    inside = (gx >= x.min()) & (gx <= x.max()) & (gy >= y.min()) & (gy <= y.max())
    return np.where(inside, out, np.nan)


def _grid(arrays: Mapping[str, np.ndarray], prefix: str, metric: str) -> tuple[np.ndarray, ...] | None:
    keys = (f"{prefix}x", f"{prefix}y", f"{prefix}{metric}")
    if not all(k in arrays for k in keys):
        return None
    x, y, z = (np.asarray(arrays[k], dtype=float) for k in keys)
    return (x, y, z) if z.shape == (len(y), len(x)) else None


def surface_comparison_figure(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], *, metric: str = "loss",
                              plane: str = "random", names: tuple[str, str] = ("A", "B"), title: str | None = None,
                              height: int = 440) -> go.Figure:
    """Contour maps of the ``metric`` grids of two ``slices`` results on one colour scale, and B − A.

    ``plane`` is ``"random"`` (``x``, ``y``, ``{metric}``: each result's own directions d₁, d₂) or ``"pca"``
    (``pca_*``). Loss colours are log10 of the loss, as on the single surface; the difference is in the
    metric's own units on a diverging scale centred on 0.
    """
    if metric not in _METRIC_LABEL:
        raise ValueError(f"metric must be one of {', '.join(_METRIC_LABEL)}, got {metric!r}.")
    if plane not in ("random", "pca"):
        raise ValueError(f"plane must be 'random' or 'pca', got {plane!r}.")
    prefix = "pca_" if plane == "pca" else ""
    label = _METRIC_LABEL[metric]
    grids = [_grid(a, prefix, metric), _grid(b, prefix, metric)]
    missing = [n for n, g in zip(names, grids) if g is None]
    if missing:
        return empty_figure(f"No {'PCA-plane ' if prefix else ''}{label} grid for {' and '.join(missing)}.",
                            title=title, height=height)
    (xa, ya, za), (xb, yb, zb) = grids
    shown = [contour_values(za, metric)[0], contour_values(zb, metric)[0]]
    finite = np.concatenate([s[np.isfinite(s)] for s in shown])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    _, colorbar = contour_values(np.concatenate([za.ravel(), zb.ravel()])[None, :], metric)
    diff = resample(xb, yb, zb, xa, ya) - za
    span = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
    axis_names = plane_names(a, use_pca=bool(prefix))
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.14,
                        subplot_titles=(f"A: {names[0]}", f"B: {names[1]}", "Difference B − A"))
    for col, ((x, y, z), name) in enumerate(zip(grids, names), start=1):
        fig.add_trace(contour_trace(x, y, z, metric=metric, names=axis_names, coloraxis="coloraxis",
                                    name=f"{name} · {label}"), row=1, col=col)
    fig.add_trace(go.Contour(
        x=xa, y=ya, z=diff, coloraxis="coloraxis2", ncontours=24, name=f"Δ {label}",
        contours=dict(coloring="heatmap", showlines=True), line=dict(width=0.5, color="rgba(255,255,255,0.4)"),
        hovertemplate=f"{axis_names[0]}: %{{x:.3f}}<br>{axis_names[1]}: %{{y:.3f}}<br>Δ {label}: %{{z:.4g}}<extra></extra>",
    ), row=1, col=3)
    scale = "Viridis" if "loss" in metric else "Cividis"
    colorbar.update(x=fig.layout.xaxis2.domain[1] + 0.005, len=0.9, thickness=12)
    fig.update_layout(
        coloraxis=dict(colorscale=scale, cmin=lo, cmax=hi, colorbar=colorbar),
        coloraxis2=dict(colorscale="RdBu_r", cmid=0.0, cmin=-span, cmax=span, colorbar=dict(
            title=dict(text=f"Δ {label} (B − A)", side="right"), x=1.01, len=0.9, thickness=12,
            tickformat=".0%" if "loss" not in metric else None)),
    )
    short = [n.split(" (")[0] for n in axis_names]
    for col in (1, 2, 3):
        fig.update_xaxes(title_text=axis_names[0] if col == 1 else short[0], row=1, col=col)
        fig.update_yaxes(title_text=axis_names[1] if col == 1 else short[1], row=1, col=col)
    return finish(fig, title, height)


def _density(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    if "density_grid" not in arrays or "density_curve" not in arrays:
        return None
    return np.asarray(arrays["density_grid"], dtype=float), np.asarray(arrays["density_curve"], dtype=float)


def density_comparison_figure(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], *,
                              names: tuple[str, str] = ("A", "B"), title: str | None = None,
                              height: int = 400) -> go.Figure:
    """Hessian spectral densities of two ``hessian`` results on one log density range and one λ range, and
    their difference B − A on a common grid (both interpolated linearly, zero outside their own grid)."""
    curves = [_density(a), _density(b)]
    missing = [n for n, c in zip(names, curves) if c is None]
    if missing:
        return empty_figure(f"No spectral density for {' and '.join(missing)}.", title=title, height=height)
    (ga, ca), (gb, cb) = curves
    common = np.linspace(min(ga.min(), gb.min()), max(ga.max(), gb.max()), max(len(ga), len(gb)))
    diff = np.interp(common, gb, cb, left=0.0, right=0.0) - np.interp(common, ga, ca, left=0.0, right=0.0)
    peak = max(float(np.nanmax(ca)) if ca.size else 0.0, float(np.nanmax(cb)) if cb.size else 0.0)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=(f"A: {names[0]}", f"B: {names[1]}", "Difference B − A"))
    for col, ((grid, curve), name, color) in enumerate(zip(curves, names, ("#4C78A8", "#F58518")), start=1):
        fig.add_trace(go.Scatter(x=grid, y=curve, mode="lines", name=name, line=dict(color=color, width=2),
                                 hovertemplate=f"<b>{name}</b><br>λ = %{{x:.4g}}<br>density %{{y:.3g}}<extra></extra>"),
                      row=1, col=col)
    fig.add_trace(go.Scatter(x=common, y=diff, mode="lines", name="B − A", line=dict(color="#54A24B", width=2),
                             fill="tozeroy", hovertemplate="λ = %{x:.4g}<br>B − A %{y:.3g}<extra></extra>"), row=1, col=3)
    x_range = [float(common[0]), float(common[-1])]
    for col in (1, 2):
        yaxis = dict(title_text="density (log scale)", type="log")
        if peak > 0:
            top = np.log10(peak)
            yaxis["range"] = [top - _DENSITY_DECADES, top + 0.3]
        fig.update_yaxes(row=1, col=col, **yaxis)
    fig.update_yaxes(title_text="density difference (B − A)", zeroline=True, row=1, col=3)
    fig.update_xaxes(title_text="eigenvalue λ", range=x_range)
    return finish(fig, title, height)
