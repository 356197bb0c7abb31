"""Hessian spectra of the ``hessian`` probe: top eigenvalues against the edge of stability, the trace
with its standard error, and the smoothed spectral density at a checkpoint and over training."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures._series import RunSeries
from dashboard.figures._style import colors_for, empty_figure, finish, markers_needed, rgba, run_line

_LAMBDA = re.compile(r"^lambda_(\d+)$")


def hessian_eigenvalues_figure(scalars: pd.DataFrame | None, *, lr: Mapping[str, float | None] | None = None,
                               colors: Mapping[str, str] | None = None,
                               title: str | None = "Top Hessian eigenvalues during training",
                               height: int = 420) -> go.Figure:
    """Top-k Hessian eigenvalues λ1 ≥ λ2 ≥ … over steps (λ1 bold, the rest fainter), per run.

    When ``lr[run]`` is known a dashed horizontal line marks 2/η, the edge of stability of gradient
    descent with step size η (λ1 above it makes full-batch GD diverge along that direction).
    """
    series = RunSeries(scalars, ["hessian"] if scalars is not None and "probe" in scalars.columns
                       and (scalars["probe"] == "hessian").any() else None)
    runs = [r for r in series.runs if any(_LAMBDA.match(k) or k == "lambda_max" for k in series.keys(r))]
    if not runs:
        return empty_figure("No Hessian eigenvalues recorded.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = go.Figure()
    for run in runs:
        keys = sorted((k for k in series.keys(run) if _LAMBDA.match(k)), key=lambda k: int(_LAMBDA.match(k).group(1)))
        if not keys:
            keys = ["lambda_max"]
        first_steps = None
        for rank, key in enumerate(keys):
            steps, values = series.get(run, key)
            first_steps = steps if first_steps is None else first_steps
            symbol = f"λ{rank + 1}" if key != "lambda_max" else "λmax"
            fig.add_trace(run_line(steps, values, run=run, label=symbol, color=palette[run],
                                   width=2.4 if rank == 0 else 1.2, opacity=1.0 if rank == 0 else max(0.25, 0.75 - 0.1 * rank),
                                   show_legend=rank == 0, name=f"{run} · λ1…λ{len(keys)}" if len(keys) > 1 else f"{run} · {symbol}",
                                   markers=markers_needed(steps)))
        if "lambda_min" in series.keys(run):
            steps, values = series.get(run, "lambda_min")
            fig.add_trace(run_line(steps, values, run=run, label="λmin", color=palette[run], dash="dot", width=1.2,
                                   name=f"{run} · λmin"))
        rate = (lr or {}).get(run)
        if rate and first_steps is not None and len(first_steps):
            edge = 2.0 / float(rate)
            fig.add_trace(go.Scatter(
                x=[first_steps.min(), first_steps.max()], y=[edge, edge], mode="lines", name=f"{run} · 2/η",
                legendgroup=run, line=dict(color=palette[run], dash="dash", width=1.5),
                hovertemplate=f"<b>{run}</b><br>2/η = {edge:.4g} (η = {float(rate):.3g})<extra>edge of stability</extra>",
            ))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="eigenvalue of the loss Hessian")
    return finish(fig, title, height)


def hessian_trace_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                         title: str | None = "Hessian trace during training", height: int = 420) -> go.Figure:
    """The Hessian trace estimate over steps with a ± one-standard-error band (``trace_stderr``)."""
    series = RunSeries(scalars, None)
    runs = [r for r in series.runs if "trace" in series.keys(r)]
    if not runs:
        return empty_figure("No Hessian trace recorded.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = go.Figure()
    for run in runs:
        steps, values = series.get(run, "trace")
        band = series.get(run, "trace_stderr")
        if band is not None:
            err = pd.Series(band[1], index=band[0]).reindex(steps).to_numpy(dtype=float)
            fig.add_trace(go.Scatter(
                x=np.concatenate([steps, steps[::-1]]), y=np.concatenate([values + err, (values - err)[::-1]]),
                fill="toself", fillcolor=rgba(palette[run], 0.18), line=dict(width=0), hoverinfo="skip", mode="lines",
                legendgroup=run, showlegend=False, name=f"{run} · ± stderr",
            ))
        fig.add_trace(run_line(steps, values, run=run, label="trace", color=palette[run], name=f"{run} · trace",
                               markers=markers_needed(steps)))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="tr(H) (± 1 standard error)")
    return finish(fig, title, height)


_DENSITY_DECADES = 7.0  # the density axis shows this many decades below the peak; smaller values are noise


def spectral_density_figure(densities: Mapping[str, Mapping[str, np.ndarray]], *,
                            colors: Mapping[str, str] | None = None,
                            title: str | None = "Hessian spectral density", height: int = 420) -> go.Figure:
    """Smoothed eigenvalue densities (``density_grid``, ``density_curve``) on a log density axis.

    ``densities[name]`` is the arrays dict of a ``hessian`` result (e.g. one per run at the chosen
    checkpoint). The axis shows seven decades below the highest peak: the Gaussian-smoothed quadrature
    curve goes to ~0 far from any node, and those values carry no information.
    """
    names = [n for n, a in densities.items() if "density_grid" in a and "density_curve" in a]
    if not names:
        return empty_figure("No spectral density in these results.", title=title, height=height)
    palette = colors_for(names, colors)
    fig = go.Figure()
    peak = 0.0
    for name in names:
        grid = np.asarray(densities[name]["density_grid"], dtype=float)
        curve = np.asarray(densities[name]["density_curve"], dtype=float)
        peak = max(peak, float(np.nanmax(curve)) if curve.size else 0.0)
        fig.add_trace(go.Scatter(x=grid, y=curve, mode="lines", name=name, line=dict(color=palette[name], width=2),
                                 hovertemplate=f"<b>{name}</b><br>λ = %{{x:.4g}}<br>density %{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="eigenvalue λ")
    yaxis = dict(title_text="density (log scale)", type="log")
    if peak > 0:
        top = np.log10(peak)
        yaxis["range"] = [top - _DENSITY_DECADES, top + 0.3]
    fig.update_yaxes(**yaxis)
    return finish(fig, title, height)


def spectrogram_figure(densities: Mapping[int, Mapping[str, np.ndarray]], *, run: str | None = None,
                       title: str | None = None, height: int = 420) -> go.Figure:
    """Heat map of the Hessian spectral density over training: x = step, y = eigenvalue, colour = log10 density.

    ``densities[step]`` is the arrays dict of a ``hessian`` result at that step. Curves on different grids
    are interpolated (linearly, zero outside their grid) onto one common grid spanning all of them; values
    more than seven decades below the overall peak are clipped there.
    """
    title = title if title is not None else ("Spectral density over training" + (f" — {run}" if run else ""))
    items = sorted((int(s), a) for s, a in densities.items() if "density_grid" in a and "density_curve" in a)
    if not items:
        return empty_figure("No spectral densities recorded.", title=title, height=height)
    grids = [np.asarray(a["density_grid"], dtype=float) for _, a in items]
    curves = [np.asarray(a["density_curve"], dtype=float) for _, a in items]
    if all(g.shape == grids[0].shape and np.array_equal(g, grids[0]) for g in grids):
        common = grids[0]
        stack = np.stack(curves, axis=1)
    else:
        common = np.linspace(min(g.min() for g in grids), max(g.max() for g in grids), max(len(g) for g in grids))
        stack = np.stack([np.interp(common, g, c, left=0.0, right=0.0) for g, c in zip(grids, curves)], axis=1)
    peak = float(np.nanmax(stack)) if stack.size else 0.0
    floor = 10.0 ** (np.log10(peak) - _DENSITY_DECADES) if peak > 0 else 1e-12
    z = np.log10(np.maximum(stack, floor))
    steps = np.array([s for s, _ in items], dtype=np.int64)
    fig = go.Figure(go.Heatmap(
        x=steps, y=common, z=z, colorscale="Magma", colorbar=dict(title=dict(text="log₁₀ density", side="right")),
        hovertemplate="step %{x}<br>λ = %{y:.4g}<br>log₁₀ density %{z:.2f}<extra></extra>",
    ))
    # One column per checkpoint, evenly spaced: checkpoints are often spaced unevenly (e.g. logarithmically).
    fig.update_xaxes(title_text="checkpoint (training step)", type="category")
    fig.update_yaxes(title_text="eigenvalue λ")
    return finish(fig, title, height)
