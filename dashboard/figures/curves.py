"""Scalars over training steps: the loss and accuracy curves of the ``monitor`` and ``metrics`` probes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def training_curves_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                           probes: Sequence[str] = ("monitor", "metrics", "grokking"),
                           title: str | None = "Loss and accuracy during training",
                           height: int = 420) -> go.Figure:
    """Train (solid) and test (dashed) loss on a log axis beside train/test accuracy, over steps.

    Each key of each run is taken from the source probe with the most rows (the training ``monitor``
    usually; ``metrics`` at checkpoints otherwise).
    """
    series = RunSeries(scalars, probes)
    wanted = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
    runs = [r for r in series.runs if series.keys(r) & set(wanted)]
    if not runs:
        return empty_figure("No loss or accuracy recorded yet.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    legend_shown: set[tuple[str, str]] = set()
    for run in runs:
        for col, (train_key, test_key, label) in enumerate(
            (("train_loss", "test_loss", "loss"), ("train_accuracy", "test_accuracy", "accuracy")), start=1
        ):
            for key, dash, split in ((train_key, TRAIN_DASH, "train"), (test_key, TEST_DASH, "test")):
                found = series.get(run, key)
                if found is None:
                    continue
                steps, values = found
                show = (run, split) not in legend_shown
                legend_shown.add((run, split))
                fig.add_trace(run_line(steps, values, run=run, label=f"{split} {label}", color=palette[run], dash=dash,
                                       name=f"{run} · {split}", show_legend=show, fmt=".4g" if col == 1 else ".2%",
                                       markers=markers_needed(steps)), row=1, col=col)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="loss (log scale)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%", row=1, col=2)
    return finish(fig, title, height)
