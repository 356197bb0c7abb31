"""Sharpness measures of the ``sharpness`` probe over training steps, one small panel per measure."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures._series import RunSeries
from dashboard.figures._style import colors_for, empty_figure, finish, log_useful, markers_needed, run_line

SHARPNESS_MEASURES = {
    "worst_case": "Worst-case sharpness (ρ-ball)",
    "worst_case_adaptive": "Adaptive worst-case sharpness",
    "sam_one_step": "SAM one-step sharpness",
    "average_case": "Average-case sharpness (Gaussian)",
    "m_sharpness": "m-sharpness",
    "gradient_norm": "Gradient norm ‖∇L‖",
    "first_order_flatness": "First-order flatness",
    "lambda_max": "λmax",
    "trace": "Hessian trace",
    "eos_ratio": "Edge-of-stability ratio λmax·η/2",
    "sgd_trace_ratio": "SGD trace ratio",
}


def sharpness_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                     title: str | None = "Sharpness measures during training", height: int | None = None) -> go.Figure:
    """Small multiples, one panel per sharpness measure present (see ``SHARPNESS_MEASURES``), over steps.

    Panels whose values are all positive and span more than two decades use a log axis.
    """
    series = RunSeries(scalars, ["sharpness"] if scalars is not None and "probe" in scalars.columns
                       and (scalars["probe"] == "sharpness").any() else None)
    present = [k for k in SHARPNESS_MEASURES if any(k in series.keys(r) for r in series.runs)]
    if not present:
        return empty_figure("No sharpness measures recorded.", title=title, height=height or 320)
    runs = [r for r in series.runs if series.keys(r) & set(present)]
    palette = colors_for(runs, colors)
    cols = 3 if len(present) > 4 else min(2, len(present))
    rows = -(-len(present) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[SHARPNESS_MEASURES[k] for k in present],
                        horizontal_spacing=0.08, vertical_spacing=min(0.14, 0.32 / rows))
    legend_shown: set[str] = set()
    for index, key in enumerate(present):
        row, col = index // cols + 1, index % cols + 1
        values_all = []
        for run in runs:
            found = series.get(run, key)
            if found is None:
                continue
            steps, values = found
            values_all.append(values)
            fig.add_trace(run_line(steps, values, run=run, label=SHARPNESS_MEASURES[key], color=palette[run],
                                   name=run, show_legend=run not in legend_shown, markers=markers_needed(steps)),
                          row=row, col=col)
            legend_shown.add(run)
        if values_all and log_useful(np.concatenate(values_all)):
            fig.update_yaxes(type="log", row=row, col=col)
        bottom_of_column = index + cols >= len(present)
        fig.update_xaxes(title_text="training step" if bottom_of_column else None, row=row, col=col)
    fig = finish(fig, title, height or 240 * rows + 110)
    fig.update_annotations(font_size=13)
    return fig
