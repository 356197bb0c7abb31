"""Weight-matrix spectra of the ``weights`` probe: one layer's log-log ESD with its power-law fit and the
Marchenko–Pastur bulk, the per-layer alpha as a layer × step heat map, and the model-level alphas over
training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures._series import RunSeries, clean_scalars
from dashboard.figures._style import colors_for, empty_figure, finish, markers_needed, run_line

ALPHA_SUFFIX = "/alpha"


def _strings(values: object) -> list[str]:
    return [str(v) for v in np.asarray(values).ravel()] if values is not None else []


def layer_index(arrays: Mapping[str, np.ndarray], layer: str | None = None) -> int | None:
    """The row of ``layer`` in a ``weights`` result; without one, the first layer with a fit (else the first)."""
    names = _strings(arrays.get("layer_names"))
    if not names:
        return None
    if layer is not None and layer in names:
        return names.index(layer)
    alpha = np.asarray(arrays.get("alpha", np.full(len(names), np.nan)), dtype=float)
    fitted = np.flatnonzero(np.isfinite(alpha))
    return int(fitted[0]) if fitted.size else 0


def _value(arrays: Mapping[str, np.ndarray], key: str, index: int) -> float:
    values = arrays.get(key)
    if values is None:
        return float("nan")
    flat = np.asarray(values, dtype=float).ravel()
    return float(flat[index]) if index < flat.size else float("nan")


def _mp_density(x: np.ndarray, scale: float, ratio: float) -> np.ndarray:
    """Marchenko–Pastur density of scale s² and ratio y = M/N ≤ 1 (zero outside its support)."""
    lo, hi = scale * (1 - np.sqrt(ratio)) ** 2, scale * (1 + np.sqrt(ratio)) ** 2
    inside = (x > lo) & (x < hi)
    root = np.sqrt(np.clip((hi - x) * (x - lo), 0.0, None))
    return np.where(inside, root / (2 * np.pi * scale * ratio * np.where(inside, x, 1.0)), 0.0)


def _vertical(x: float, y_range: tuple[float, float], name: str, color: str, dash: str) -> go.Scatter:
    return go.Scatter(x=[x, x], y=list(y_range), mode="lines", name=name, line=dict(color=color, dash=dash, width=1.5),
                      hovertemplate=f"{name}<extra></extra>")


def weights_esd_figure(arrays: Mapping[str, np.ndarray], layer: str | None = None, *, title: str | None = None,
               height: int = 440) -> go.Figure:
    """The ESD of one layer on log-log axes: the stored log-binned histogram as a density, the fitted power
    law ``p(λ) ∝ λ^(−α)`` above ``xmin`` (scaled to its share of the eigenvalues), and the fitted
    Marchenko–Pastur bulk with its edge + Tracy–Widom threshold (eigenvalues beyond it are spikes)."""
    index = layer_index(arrays, layer)
    if index is None or "esd_counts" not in arrays or "esd_log10_edges" not in arrays:
        return empty_figure("No weight spectra in this result.", title=title, height=height)
    name = _strings(arrays["layer_names"])[index]
    title = title if title is not None else f"ESD of {name}"
    log_edges = np.asarray(arrays["esd_log10_edges"], dtype=float)[index]
    counts = np.asarray(arrays["esd_counts"], dtype=float)[index]
    n_evals = _value(arrays, "n_evals", index)
    if not np.isfinite(log_edges).all() or not counts.sum() or not n_evals > 0:
        message = _strings(arrays.get("messages"))[index] if "messages" in arrays else ""
        return empty_figure(f"No spectrum for {name}: {message or 'no positive eigenvalues'}.", title=title,
                            height=height)
    edges = 10.0 ** log_edges
    centers = np.sqrt(edges[:-1] * edges[1:])
    density = counts / (n_evals * np.diff(edges))
    shown = counts > 0
    fig = go.Figure(go.Scatter(x=centers[shown], y=density[shown], mode="markers+lines", name="ESD",
                               line=dict(color="#4C78A8", width=1.5), marker=dict(size=6, color="#4C78A8"),
                               hovertemplate="λ ≈ %{x:.4g}<br>density %{y:.3g}<extra>ESD</extra>"))
    y_range = (float(density[shown].min()), float(density[shown].max()))
    alpha, xmin, n_tail = (_value(arrays, k, index) for k in ("alpha", "xmin", "n_tail"))
    if np.isfinite(alpha) and xmin > 0 and n_tail > 0:
        grid = np.geomspace(xmin, edges[-1], 60)
        law = (n_tail / n_evals) * (alpha - 1) / xmin * (grid / xmin) ** (-alpha)
        stderr = _value(arrays, "alpha_stderr", index)
        label = f"power law α = {alpha:.2f}" + (f" ± {stderr:.2f}" if np.isfinite(stderr) else "")
        fig.add_trace(go.Scatter(x=grid, y=law, mode="lines", name=label, line=dict(color="#E45756", width=2.2),
                                 hovertemplate="λ = %{x:.4g}<br>fit %{y:.3g}<extra>power law</extra>"))
        fig.add_trace(_vertical(xmin, y_range, f"xmin = {xmin:.3g}", "#E45756", "dot"))
    scale, ratio = _value(arrays, "mp_scale", index), _value(arrays, "mp_ratio", index)
    if scale > 0 and 0 < ratio <= 1:
        lo, hi = scale * (1 - np.sqrt(ratio)) ** 2, scale * (1 + np.sqrt(ratio)) ** 2
        grid = np.geomspace(max(lo, hi * 1e-6, edges[0]), hi, 200)[1:-1]
        fig.add_trace(go.Scatter(x=grid, y=_mp_density(grid, scale, ratio), mode="lines", name="Marchenko–Pastur bulk",
                                 line=dict(color="#54A24B", width=2, dash="dash"),
                                 hovertemplate="λ = %{x:.4g}<br>MP %{y:.3g}<extra>MP bulk</extra>"))
    threshold, spikes = _value(arrays, "mp_threshold", index), _value(arrays, "n_spikes", index)
    if np.isfinite(threshold) and threshold > 0:
        label = "MP edge + TW margin" + (f" ({int(spikes)} spike{'s' if spikes != 1 else ''})" if spikes >= 0 else "")
        fig.add_trace(_vertical(threshold, y_range, label, "#54A24B", "dashdot"))
    fig.update_xaxes(title_text="eigenvalue λ of WᵀW/N (log scale)", type="log")
    fig.update_yaxes(title_text="density (log scale)", type="log")
    return finish(fig, title, height)


def _layer_keys(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    suffix = f"/{metric}"
    rows = frame[frame["key"].astype(str).str.endswith(suffix)]
    return rows.assign(layer=rows["key"].astype(str).str[: -len(suffix)])


def weights_alpha_heatmap_figure(scalars: pd.DataFrame | None, *, run: str | None = None,
                         layers: Sequence[str] | None = None, metric: str = "alpha", title: str | None = None,
                         height: int = 440) -> go.Figure:
    """Per-layer ``metric`` (default alpha) of one run as a heat map: x = checkpoint, y = layer (model order
    when ``layers`` is given), colour = value. Blank cells: no fit at that checkpoint (too few eigenvalues,
    non-finite weights)."""
    title = title if title is not None else (f"Per-layer {metric} over training" + (f" — {run}" if run else ""))
    frame = clean_scalars(scalars)
    if "probe" in frame.columns and (frame["probe"] == "weights").any():
        frame = frame[frame["probe"] == "weights"]
    if run is not None:
        frame = frame[frame["run"].astype(str) == run]
    rows = _layer_keys(frame, metric)
    if rows.empty:
        return empty_figure(f"No per-layer {metric} recorded.", title=title, height=height)
    table = rows.pivot_table(index="layer", columns="step", values="value", aggfunc="last")
    order = [n for n in (layers or []) if n in table.index] + sorted(set(table.index) - set(layers or []))
    table = table.reindex(order)
    steps = [int(s) for s in table.columns]
    fig = go.Figure(go.Heatmap(
        x=[f"{s:,}" for s in steps], y=list(table.index), z=table.to_numpy(dtype=float), colorscale="Viridis",
        reversescale=metric == "alpha", colorbar=dict(title=dict(text=metric, side="right")),
        hovertemplate="step %{x}<br>%{y}<br>" + metric + " %{z:.3f}<extra></extra>",
    ))
    fig.update_xaxes(title_text="checkpoint (training step)", type="category")
    fig.update_yaxes(title_text="layer", type="category", autorange="reversed")
    return finish(fig, title, height)


def weights_alpha_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                          title: str | None = "Model-level alpha during training", height: int = 420) -> go.Figure:
    """Mean alpha over the fitted layers (solid) and the weighted alpha Σ α·log10 λ_max / L (dashed), per run."""
    series = RunSeries(scalars, ["weights"] if scalars is not None and "probe" in scalars.columns
                       and (scalars["probe"] == "weights").any() else None)
    runs = [r for r in series.runs if {"alpha_mean", "alpha_weighted"} & series.keys(r)]
    if not runs:
        return empty_figure("No weight-spectrum alphas recorded.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = go.Figure()
    for run in runs:
        for key, label, dash in (("alpha_mean", "mean α", "solid"), ("alpha_weighted", "weighted α̂", "dash")):
            found = series.get(run, key)
            if found is None:
                continue
            steps, values = found
            fig.add_trace(run_line(steps, values, run=run, label=label, color=palette[run], dash=dash,
                                   name=f"{run} · {label}", markers=markers_needed(steps), fmt=".3f"))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="alpha (2–4: well trained; above 6: near random)")
    return finish(fig, title, height)
