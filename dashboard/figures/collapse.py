"""Neural collapse (``collapse`` probe): NC1–NC4 over training and the class-mean cosine matrices."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures._series import RunSeries
from dashboard.figures._style import (
    TEST_DASH,
    TRAIN_DASH,
    colors_for,
    empty_figure,
    finish,
    markers_needed,
    run_line,
)

_COLLAPSE_PANELS = (
    ("NC1 — within-class variability", (("nc1", "NC1 tr(Σ_W Σ_B⁺)/C"),)),
    ("NC2 — ETF distance; equinorm, equiangularity (dotted)", (("nc2_etf_distance", "ETF distance"),
                                     ("nc2_equinorm_means", "equinorm (means)"),
                                     ("nc2_equiangular_means", "equiangularity (means)"))),
    ("NC3 — self-duality", (("nc3_self_duality", "‖W/‖W‖ − M/‖M‖‖²"),)),
    ("NC4 — nearest-class-centre mismatch", (("nc4_ncc_mismatch", "NCC mismatch"),)),
)


def collapse_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                    title: str | None = "Neural collapse during training", height: int = 600) -> go.Figure:
    """NC1–NC4 over steps on log axes (smaller = more collapsed), per run; train solid, test (``test_``) dashed.

    Panel NC2 draws the ETF distance bold and the equinorm / equiangularity measures of the class means
    thinner. Zero values (e.g. NC4 once every sample is classified by its nearest centre) are not drawn
    on a log axis.
    """
    series = RunSeries(scalars, ["collapse"] if scalars is not None and "probe" in scalars.columns
                       and (scalars["probe"] == "collapse").any() else None)
    all_keys = {k for _, keys in _COLLAPSE_PANELS for k, _ in keys}
    runs = [r for r in series.runs if series.keys(r) & all_keys]
    if not runs:
        return empty_figure("No neural-collapse measures recorded.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p for p, _ in _COLLAPSE_PANELS],
                        horizontal_spacing=0.1, vertical_spacing=0.17)
    legend_shown: set[str] = set()
    for index, (_, keys) in enumerate(_COLLAPSE_PANELS):
        row, col = index // 2 + 1, index % 2 + 1
        for run in runs:
            for rank, (key, label) in enumerate(keys):
                for prefix, dash, split in (("", TRAIN_DASH, "train"), ("test_", TEST_DASH, "test")):
                    found = series.get(run, prefix + key)
                    if found is None:
                        continue
                    steps, values = found
                    values = np.where(values > 0, values, np.nan)
                    show = (run, split) not in legend_shown
                    legend_shown.add((run, split))
                    fig.add_trace(run_line(steps, values, run=run, label=f"{split} {label}", color=palette[run],
                                           dash=dash if rank == 0 else "dot", width=2.2 if rank == 0 else 1.2,
                                           opacity=1.0 if rank == 0 else 0.6, show_legend=show,
                                           name=f"{run} · {split}", markers=markers_needed(steps)), row=row, col=col)
        fig.update_yaxes(type="log", row=row, col=col)
        fig.update_xaxes(title_text="training step" if row == 2 else None, row=row, col=col)
    fig = finish(fig, title, height)
    fig.update_annotations(font_size=13)
    return fig


def cosine_matrix_figure(arrays: Mapping[str, np.ndarray], *, title: str | None = None,
                         height: int = 440) -> go.Figure:
    """Heat maps of the pairwise cosines of the centred class means (and classifier rows, when stored).

    Under neural collapse the off-diagonal cosines all approach −1/(C−1), the simplex equiangular tight
    frame; the colour scale is centred on 0 and spans [−1, 1].
    """
    panels = [(k, t) for k, t in (("cosine_means", "Class means"), ("cosine_weights", "Classifier weights"))
              if k in arrays]
    if not panels:
        return empty_figure("No class-mean cosine matrix in this result.", title=title, height=height)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels], horizontal_spacing=0.12)
    n_classes = 0
    for col, (key, label) in enumerate(panels, start=1):
        matrix = np.asarray(arrays[key], dtype=float)
        n_classes = matrix.shape[0]
        classes = [str(c) for c in range(n_classes)]
        fig.add_trace(go.Heatmap(
            z=matrix, x=classes, y=classes, zmin=-1.0, zmax=1.0, zmid=0.0, colorscale="RdBu_r", name=label,
            showscale=col == len(panels), colorbar=dict(title=dict(text="cosine", side="right")),
            hovertemplate=f"{label}<br>class %{{y}} vs %{{x}}<br>cos %{{z:.3f}}<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(title_text="class", type="category", row=1, col=col)
        fig.update_yaxes(title_text="class" if col == 1 else None, type="category", autorange="reversed",
                         scaleanchor=f"x{'' if col == 1 else col}", row=1, col=col)
    etf = -1.0 / (n_classes - 1) if n_classes > 1 else float("nan")
    default = f"Pairwise cosines (simplex-ETF target off the diagonal: −1/(C−1) = {etf:.3f})"
    return finish(fig, title if title is not None else default, height)
