"""Training dynamics beyond SGD: the preconditioned sharpness of adaptive optimizers against its threshold
(stored by the ``sharpness`` probe), the gradient noise scale over training (``noise`` probe), and mode
connectivity — the loss along a trained curve against the straight line (``connectivity`` records)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures._series import RunSeries
from dashboard.figures._style import colors_for, empty_figure, finish, log_useful, markers_needed, run_line

PRECONDITIONED_KEYS = ("lambda_max_preconditioned", "preconditioned_threshold")


def preconditioned_sharpness_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                                    title: str | None = "Preconditioned sharpness λmax(P⁻¹H) of the optimizer",
                                    height: int = 420) -> go.Figure:
    """``lambda_max_preconditioned`` over steps (solid) against ``preconditioned_threshold`` (dashed; 38/η for
    Adam at β₁ = 0.9), and the raw ``lambda_max`` (dotted) when stored, per run; log axis when the values
    span decades (the preconditioned and raw scales differ by the size of P)."""
    series = RunSeries(scalars, None)
    runs = [r for r in series.runs if "lambda_max_preconditioned" in series.keys(r)]
    if not runs:
        return empty_figure("No preconditioned sharpness recorded (it needs optimizer state: checkpoints saved "
                            "with it, or the Monitor given the optimizer).", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = go.Figure()
    values_all = []
    for run in runs:
        steps, values = series.get(run, "lambda_max_preconditioned")  # type: ignore[misc]
        values_all.append(values)
        fig.add_trace(run_line(steps, values, run=run, label="λmax(P⁻¹H)", color=palette[run], width=2.4,
                               name=f"{run} · λmax(P⁻¹H)", markers=markers_needed(steps)))
        threshold = series.get(run, "preconditioned_threshold")
        if threshold is not None:
            values_all.append(threshold[1])
            fig.add_trace(run_line(threshold[0], threshold[1], run=run, label="threshold", color=palette[run],
                                   dash="dash", width=1.5, name=f"{run} · threshold"))
        raw = series.get(run, "lambda_max")
        if raw is not None:
            values_all.append(raw[1])
            fig.add_trace(run_line(raw[0], raw[1], run=run, label="λmax(H)", color=palette[run], dash="dot",
                                   width=1.2, name=f"{run} · λmax(H)"))
    if log_useful(np.concatenate(values_all)):
        fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="eigenvalue")
    return finish(fig, title, height)


def noise_scale_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                       title: str | None = "Gradient noise scale (critical batch size)", height: int = 420) -> go.Figure:
    """``b_simple`` = tr Σ / |G|² (solid) and ``b_noise`` = tr(HΣ)/GᵀHG (dashed) over steps, per run, on a
    log axis when they span decades (McCandlish et al. 2018)."""
    series = RunSeries(scalars, ["noise"] if scalars is not None and "probe" in scalars.columns
                       and (scalars["probe"] == "noise").any() else None)
    runs = [r for r in series.runs if "b_simple" in series.keys(r) or "b_noise" in series.keys(r)]
    if not runs:
        return empty_figure("No gradient noise scale recorded.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = go.Figure()
    values_all = []
    for run in runs:
        for key, label, dash in (("b_simple", "B_simple", "solid"), ("b_noise", "B_noise", "dash")):
            found = series.get(run, key)
            if found is None:
                continue
            steps, values = found
            values_all.append(values)
            fig.add_trace(run_line(steps, values, run=run, label=label, color=palette[run], dash=dash,
                                   name=f"{run} · {label}", markers=markers_needed(steps)))
    if log_useful(np.concatenate(values_all)):
        fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="batch size (samples)")
    return finish(fig, title, height)


_PATHS = (("curve_loss", "trained curve", "solid"), ("line_loss", "straight line", "dash"),
          ("aligned_line_loss", "line after alignment", "dot"))


def connectivity_figure(results: Mapping[str, Mapping[str, np.ndarray]], *, colors: Mapping[str, str] | None = None,
                        title: str | None = "Mode connectivity: loss along the curve and the line",
                        height: int = 420) -> go.Figure:
    """Loss over t ∈ [0, 1] between two models: the trained curve (solid), the straight line (dashed) and
    the straight line after permutation alignment (dotted) when stored. ``results[name]`` is the arrays
    dict of a ``connectivity`` record (``t``, ``curve_loss``, ``line_loss``, optional ``aligned_line_loss``)."""
    names = [n for n, a in results.items() if "t" in a and ("curve_loss" in a or "line_loss" in a)]
    if not names:
        return empty_figure("No connectivity results recorded.", title=title, height=height)
    palette = colors_for(names, colors)
    fig = go.Figure()
    for name in names:
        arrays = results[name]
        t = np.asarray(arrays["t"], dtype=float)
        for key, label, dash in _PATHS:
            if key not in arrays:
                continue
            loss = np.asarray(arrays[key], dtype=float)
            chord = (1 - t) * loss[0] + t * loss[-1]
            fig.add_trace(go.Scatter(
                x=t, y=loss, mode="lines", name=f"{name} · {label}", legendgroup=name,
                line=dict(color=palette[name], dash=dash, width=2.2 if dash == "solid" else 1.6),
                customdata=loss - chord,
                hovertemplate=f"<b>{name}</b> · {label}<br>t = %{{x:.3f}}<br>loss %{{y:.4g}}"
                              "<br>above the chord %{customdata:.3g}<extra></extra>",
            ))
    fig.update_xaxes(title_text="t (0: model A, 1: model B)", range=[0, 1])
    fig.update_yaxes(title_text="loss")
    return finish(fig, title, height)
