"""Grokking diagnostics (``grokking`` probe and training ``monitor``): the grokking and Softmax-Collapse
onsets and the six-panel figure that marks them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

GROKKING_FRACTION = 0.95
SC_THRESHOLD = 0.01


def grokking_onset(steps: np.ndarray, test_accuracy: np.ndarray, fraction: float = GROKKING_FRACTION) -> int | None:
    """First step whose test accuracy reaches ``fraction`` × the run's best test accuracy (None if no data).

    A relative threshold keeps the definition meaningful for tasks whose best accuracy is below 1.
    """
    steps = np.asarray(steps)
    values = np.asarray(test_accuracy, dtype=float)
    finite = np.isfinite(values)
    if not finite.any() or np.nanmax(values) <= 0:
        return None
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    hit = np.flatnonzero(values >= fraction * np.nanmax(values))
    return int(steps[hit[0]]) if hit.size else None


def sc_onset(steps: np.ndarray, sc_fraction: np.ndarray, threshold: float = SC_THRESHOLD) -> int | None:
    """First step where the Softmax-Collapse fraction exceeds ``threshold`` (None if it never does).

    Softmax Collapse: the correct-class softmax probability rounds to exactly 1 in floating point, so the
    sample's gradient vanishes; a growing fraction of such samples stalls learning.
    """
    steps = np.asarray(steps)
    values = np.asarray(sc_fraction, dtype=float)
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    hit = np.flatnonzero(values > threshold)
    return int(steps[hit[0]]) if hit.size else None


_GROKKING_PANELS = (
    ("Accuracy", (("train_accuracy", "train", TRAIN_DASH), ("test_accuracy", "test", TEST_DASH)), ".1%"),
    ("Loss (log scale)", (("train_loss", "train", TRAIN_DASH), ("test_loss", "test", TEST_DASH)), ".4g"),
    ("Softmax-Collapse fraction", (("sc_fraction", "SC fraction", TRAIN_DASH),), ".2%"),
    ("NLM alignment cos(−∇L, NLM)", (("nlm_cosine", "NLM cosine", TRAIN_DASH),), ".3f"),
    ("Weight norm ‖θ‖", (("weight_norm", "weight norm", TRAIN_DASH),), ".4g"),
    ("Mean logit norm", (("logit_norm", "logit norm", TRAIN_DASH),), ".4g"),
)


def grokking_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                    fraction: float = GROKKING_FRACTION, sc_threshold: float = SC_THRESHOLD,
                    probes: Sequence[str] = ("grokking", "monitor", "metrics"),
                    title: str | None = "Grokking diagnostics", height: int = 640) -> go.Figure:
    """Accuracy, loss, Softmax-Collapse fraction, NLM alignment, weight and logit norms over steps.

    Data come from the ``grokking`` probe and/or the training ``monitor`` rows (per key, the source with
    the most rows). Vertical lines mark, per run, the grokking onset (:func:`grokking_onset`: first step
    with test accuracy ≥ ``fraction`` × its maximum; dashed) and the SC onset (:func:`sc_onset`: first
    step with SC fraction > ``sc_threshold``; dotted).
    """
    series = RunSeries(scalars, probes)
    all_keys = {k for _, keys, _ in _GROKKING_PANELS for k, _, _ in keys}
    runs = [r for r in series.runs if series.keys(r) & all_keys]
    if not runs:
        return empty_figure("No grokking diagnostics recorded.", title=title, height=height)
    palette = colors_for(runs, colors)
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for t, _, _ in _GROKKING_PANELS],
                        horizontal_spacing=0.07, vertical_spacing=0.17)
    legend_shown: set[tuple[str, str]] = set()
    for index, (panel, keys, fmt) in enumerate(_GROKKING_PANELS):
        row, col = index // 3 + 1, index % 3 + 1
        for run in runs:
            for key, label, dash in keys:
                found = series.get(run, key)
                if found is None:
                    continue
                steps, values = found
                split = "test" if key.startswith("test_") else "train"
                show = (run, split) not in legend_shown
                legend_shown.add((run, split))
                fig.add_trace(run_line(steps, values, run=run, label=label, color=palette[run], dash=dash,
                                       show_legend=show, name=f"{run} · {split}", fmt=fmt,
                                       markers=markers_needed(steps)), row=row, col=col)
        if panel.startswith("Loss"):
            fig.update_yaxes(type="log", row=row, col=col)
        if panel == "Accuracy":
            fig.update_yaxes(tickformat=".0%", row=row, col=col)
        if panel == "Softmax-Collapse fraction":  # often well under 1%: keep the significant decimals
            fig.update_yaxes(tickformat=".2~%", rangemode="tozero", row=row, col=col)
        fig.update_xaxes(title_text="training step" if row == 2 else None, row=row, col=col)

    shapes = []
    for run in runs:
        onsets = []
        test = series.get(run, "test_accuracy")
        if test is not None:
            onsets.append(("grokking onset", grokking_onset(*test, fraction=fraction), "dash"))
        sc = series.get(run, "sc_fraction")
        if sc is not None:
            onsets.append(("SC onset", sc_onset(*sc, threshold=sc_threshold), "dot"))
        for label, step, dash in onsets:
            if step is None:
                continue
            # A vertical line across every panel (shapes given at once: add_vline is slow per call).
            for index in range(len(_GROKKING_PANELS)):
                axis = "" if index == 0 else str(index + 1)
                shapes.append(dict(type="line", x0=step, x1=step, xref=f"x{axis}", y0=0, y1=1,
                                   yref=f"y{axis} domain", opacity=0.8, name=f"{run} {label}",
                                   line=dict(color=palette[run], dash=dash, width=1.3)))
            # One legend entry per onset, so the lines are explained.
            fig.add_trace(go.Scatter(x=[step], y=[None], mode="lines", name=f"{run} · {label} @ {step:,}",
                                     legendgroup=run, line=dict(color=palette[run], dash=dash, width=1.3),
                                     hoverinfo="skip"), row=1, col=1)
    fig.update_layout(shapes=shapes)
    fig = finish(fig, title, height)
    fig.update_annotations(font_size=13)
    return fig
