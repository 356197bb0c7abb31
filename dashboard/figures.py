"""Plotly figures of stored probe results, one pure function per figure.

Every function takes plain data — the long scalars table of :meth:`landscape.store.Store.scalars`
(columns ``run, step, probe, key, value``; ``valid`` optional) or the ``arrays`` dict of one result — and
returns a :class:`plotly.graph_objects.Figure`, so the same figures work in a notebook::

    from dashboard import figures
    figures.hessian_eigenvalues_figure(store.scalars(probe="hessian"), lr={"run": 0.1}).show()

Figures of several runs overlay them, one colour per run (:func:`run_colors`). When the data a figure
needs are missing it returns :func:`empty_figure` with a message instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "PALETTE",
    "collapse_figure",
    "cosine_matrix_figure",
    "empty_figure",
    "grokking_figure",
    "grokking_onset",
    "hessian_eigenvalues_figure",
    "hessian_trace_figure",
    "run_colors",
    "sc_onset",
    "sharpness_figure",
    "slice_curves",
    "slice_figure",
    "spectral_density_figure",
    "spectrogram_figure",
    "surface_figure",
    "training_curves_figure",
]

# A qualitative palette that stays distinguishable on white and for common colour-vision deficiencies.
PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#B279A2", "#EECA3B", "#9D755D", "#FF9DA6", "#79706E",
)
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
TEXT = "#1f2937"
GRID = "#e5e7eb"

_TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family=FONT, size=13, color=TEXT),
        title=dict(font=dict(size=16), x=0.0, xanchor="left", xref="paper"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=list(PALETTE),
        hoverlabel=dict(font=dict(family=FONT, size=12)),
        legend=dict(font=dict(size=12), bgcolor="rgba(255,255,255,0.85)", tracegroupgap=2),
        xaxis=dict(gridcolor=GRID, linecolor="#9ca3af", zerolinecolor=GRID, ticks="outside", tickcolor="#9ca3af"),
        yaxis=dict(gridcolor=GRID, linecolor="#9ca3af", zerolinecolor=GRID, ticks="outside", tickcolor="#9ca3af"),
        margin=dict(l=70, r=30, t=70, b=60),
    )
)

# How a train and a test curve of the same run are told apart.
_TRAIN_DASH, _TEST_DASH = "solid", "dash"


# -- shared helpers ---------------------------------------------------------------------------------
def run_colors(runs: Sequence[str]) -> dict[str, str]:
    """A colour per run, assigned from :data:`PALETTE` in the given order (cycling after ten runs)."""
    return {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}


def empty_figure(message: str, *, title: str | None = None, height: int = 320) -> go.Figure:
    """A figure with no traces and ``message`` in its middle: what a view shows when it has no data."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#6b7280"))
    fig.update_layout(template=_TEMPLATE, height=height, title=title,
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def _finish(fig: go.Figure, title: str | None, height: int, *, legend_title: str | None = None) -> go.Figure:
    fig.update_layout(template=_TEMPLATE, height=height, title=title, hovermode="closest",
                      legend=dict(title=dict(text=legend_title) if legend_title else None, groupclick="toggleitem"))
    _tidy_log_axes(fig)
    return fig


def _tidy_log_axes(fig: go.Figure) -> None:
    """Readable log-axis ticks: powers of ten over several decades, else labelled 1-2-5 ticks (Plotly's own
    choice over one or two decades labels every digit 1…9)."""
    spans: dict[str, tuple[float, float]] = {}
    for trace in fig.data:
        values = getattr(trace, "y", None)
        if values is None or trace.type not in ("scatter", "scattergl"):
            continue
        y = np.asarray(values, dtype=float)
        y = y[np.isfinite(y) & (y > 0)]
        if y.size:
            axis = trace.yaxis or "y"
            lo, hi = spans.get(axis, (np.inf, -np.inf))
            spans[axis] = (min(lo, float(y.min())), max(hi, float(y.max())))
    for axis, (lo, hi) in spans.items():
        layout_axis = fig.layout["yaxis" + axis[1:]]
        if layout_axis.type != "log":
            continue
        decades = np.log10(hi / lo) if lo > 0 else 0.0
        if layout_axis.range is not None:
            decades = max(decades, float(layout_axis.range[1] - layout_axis.range[0]))
        if decades >= 2.5:
            layout_axis.update(exponentformat="power", dtick=1)
            continue
        ticks = _log_ticks(np.log10(lo), np.log10(hi))
        if len(ticks) >= 3:  # fewer: a narrow range, where Plotly's own plain labels read best
            layout_axis.update(tickmode="array", tickvals=ticks, ticktext=[f"{t:.3g}" for t in ticks])


def _colors_for(runs: Sequence[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    given = dict(colors or {})
    fallback = run_colors(runs)
    return {run: given.get(run, fallback[run]) for run in runs}


def _clean(scalars: pd.DataFrame | None) -> pd.DataFrame:
    """The scalars table without invalid results, checked for the columns every figure needs."""
    if scalars is None:
        return pd.DataFrame(columns=["run", "step", "probe", "key", "value"])
    missing = {"run", "step", "key", "value"} - set(scalars.columns)
    if missing:
        raise ValueError(
            f"scalars must be a long table with columns run, step, key, value (probe optional); "
            f"missing {', '.join(sorted(missing))}."
        )
    frame = scalars
    if "valid" in frame.columns:
        frame = frame[frame["valid"].astype(bool)]
    if "probe" not in frame.columns:
        frame = frame.assign(probe="")
    return frame


class _Series:
    """Per-run scalar series of a long table, chosen from the densest source probe for each key."""

    def __init__(self, scalars: pd.DataFrame | None, probes: Sequence[str] | None = None) -> None:
        frame = _clean(scalars)
        if probes is not None and len(frame):
            frame = frame[frame["probe"].isin(list(probes))]
        self.runs: list[str] = [str(r) for r in pd.unique(frame["run"])] if len(frame) else []
        self._probe_order = list(probes or [])
        self._groups: dict[tuple[str, str], list[tuple[str, pd.DataFrame]]] = {}
        if len(frame):
            for (run, key, probe), group in frame.groupby(["run", "key", "probe"], sort=False):
                self._groups.setdefault((str(run), str(key)), []).append((str(probe), group))

    def keys(self, run: str) -> set[str]:
        return {key for (r, key) in self._groups if r == run}

    def get(self, run: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Steps and values of ``key`` for ``run`` (sorted by step), from the probe with the most rows."""
        candidates = self._groups.get((run, key))
        if not candidates:
            return None

        def rank(item: tuple[str, pd.DataFrame]) -> tuple[int, int]:
            probe, group = item
            order = self._probe_order.index(probe) if probe in self._probe_order else len(self._probe_order)
            return (-len(group), order)

        _, group = min(candidates, key=rank)
        group = group.sort_values("step").drop_duplicates("step", keep="last")
        return group["step"].to_numpy(dtype=np.int64), group["value"].to_numpy(dtype=float)


def _hover(run: str, label: str, fmt: str = ".4g") -> str:
    return f"<b>{run}</b><br>step %{{x:,}}<br>{label}: %{{y:{fmt}}}<extra></extra>"


def _line(x: np.ndarray, y: np.ndarray, *, run: str, label: str, color: str, dash: str = "solid",
          width: float = 2.0, opacity: float = 1.0, show_legend: bool = True, name: str | None = None,
          fmt: str = ".4g", markers: bool = False) -> go.Scatter:
    return go.Scatter(
        x=x, y=y, mode="lines+markers" if markers else "lines", name=name or f"{run} · {label}",
        legendgroup=run, showlegend=show_legend, opacity=opacity,
        line=dict(color=color, dash=dash, width=width), marker=dict(size=5, color=color),
        hovertemplate=_hover(run, label, fmt),
    )


def _markers_needed(steps: np.ndarray) -> bool:
    return len(steps) <= 30


def _log_useful(values: np.ndarray) -> bool:
    """True when every finite value is positive and they span more than two decades (log axis reads better)."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(finite > 0)) and float(finite.max() / finite.min()) > 100.0


# -- metrics / monitor ------------------------------------------------------------------------------
def training_curves_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                           probes: Sequence[str] = ("monitor", "metrics", "grokking"),
                           title: str | None = "Loss and accuracy during training",
                           height: int = 420) -> go.Figure:
    """Train (solid) and test (dashed) loss on a log axis beside train/test accuracy, over steps.

    Each key of each run is taken from the source probe with the most rows (the training ``monitor``
    usually; ``metrics`` at checkpoints otherwise).
    """
    series = _Series(scalars, probes)
    wanted = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
    runs = [r for r in series.runs if series.keys(r) & set(wanted)]
    if not runs:
        return empty_figure("No loss or accuracy recorded yet.", title=title, height=height)
    palette = _colors_for(runs, colors)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    legend_shown: set[tuple[str, str]] = set()
    for run in runs:
        for col, (train_key, test_key, label) in enumerate(
            (("train_loss", "test_loss", "loss"), ("train_accuracy", "test_accuracy", "accuracy")), start=1
        ):
            for key, dash, split in ((train_key, _TRAIN_DASH, "train"), (test_key, _TEST_DASH, "test")):
                found = series.get(run, key)
                if found is None:
                    continue
                steps, values = found
                show = (run, split) not in legend_shown
                legend_shown.add((run, split))
                fig.add_trace(_line(steps, values, run=run, label=f"{split} {label}", color=palette[run], dash=dash,
                                    name=f"{run} · {split}", show_legend=show, fmt=".4g" if col == 1 else ".2%",
                                    markers=_markers_needed(steps)), row=1, col=col)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="loss (log scale)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%", row=1, col=2)
    return _finish(fig, title, height)


# -- landscape -------------------------------------------------------------------------------------
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
        ticks = _log_ticks(lo, hi)
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
    fig = _finish(fig, title, height)
    fig.update_layout(legend=dict(orientation="h", x=1.0, xanchor="right", y=-0.12, yanchor="top"),
                      margin=dict(l=20, r=20, t=80, b=70))
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Readable tick values (1, 2, 5 × 10^k) between 10^lo and 10^hi for a log-valued colour bar."""
    ticks = [m * 10.0 ** e for e in range(int(np.floor(lo)) - 1, int(np.ceil(hi)) + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if lo - 1e-9 <= np.log10(t) <= hi + 1e-9]
    if len(inside) > 8:
        inside = [t for t in inside if f"{t:.1e}".startswith("1")]
    return inside or [10.0 ** lo, 10.0 ** hi]


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
    palette = _colors_for(names, colors)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    any_accuracy = False
    for name in names:
        c = curves[name]
        x = np.asarray(c["x"], dtype=float)
        for key, split, dash, secondary in (("loss", "train", _TRAIN_DASH, False), ("test_loss", "test", _TEST_DASH, False),
                                            ("accuracy", "train", _TRAIN_DASH, True),
                                            ("test_accuracy", "test", _TEST_DASH, True)):
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
    fig = _finish(fig, title, height)
    fig.update_layout(margin=dict(r=40))
    return fig


# -- hessian ---------------------------------------------------------------------------------------
_LAMBDA = re.compile(r"^lambda_(\d+)$")


def hessian_eigenvalues_figure(scalars: pd.DataFrame | None, *, lr: Mapping[str, float | None] | None = None,
                               colors: Mapping[str, str] | None = None,
                               title: str | None = "Top Hessian eigenvalues during training",
                               height: int = 420) -> go.Figure:
    """Top-k Hessian eigenvalues λ1 ≥ λ2 ≥ … over steps (λ1 bold, the rest fainter), per run.

    When ``lr[run]`` is known a dashed horizontal line marks 2/η, the edge of stability of gradient
    descent with step size η (λ1 above it makes full-batch GD diverge along that direction).
    """
    series = _Series(scalars, ["hessian"] if scalars is not None and "probe" in scalars.columns
                     and (scalars["probe"] == "hessian").any() else None)
    runs = [r for r in series.runs if any(_LAMBDA.match(k) or k == "lambda_max" for k in series.keys(r))]
    if not runs:
        return empty_figure("No Hessian eigenvalues recorded.", title=title, height=height)
    palette = _colors_for(runs, colors)
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
            fig.add_trace(_line(steps, values, run=run, label=symbol, color=palette[run],
                                width=2.4 if rank == 0 else 1.2, opacity=1.0 if rank == 0 else max(0.25, 0.75 - 0.1 * rank),
                                show_legend=rank == 0, name=f"{run} · λ1…λ{len(keys)}" if len(keys) > 1 else f"{run} · {symbol}",
                                markers=_markers_needed(steps)))
        if "lambda_min" in series.keys(run):
            steps, values = series.get(run, "lambda_min")
            fig.add_trace(_line(steps, values, run=run, label="λmin", color=palette[run], dash="dot", width=1.2,
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
    return _finish(fig, title, height)


def hessian_trace_figure(scalars: pd.DataFrame | None, *, colors: Mapping[str, str] | None = None,
                         title: str | None = "Hessian trace during training", height: int = 420) -> go.Figure:
    """The Hessian trace estimate over steps with a ± one-standard-error band (``trace_stderr``)."""
    series = _Series(scalars, None)
    runs = [r for r in series.runs if "trace" in series.keys(r)]
    if not runs:
        return empty_figure("No Hessian trace recorded.", title=title, height=height)
    palette = _colors_for(runs, colors)
    fig = go.Figure()
    for run in runs:
        steps, values = series.get(run, "trace")
        band = series.get(run, "trace_stderr")
        if band is not None:
            err = pd.Series(band[1], index=band[0]).reindex(steps).to_numpy(dtype=float)
            fig.add_trace(go.Scatter(
                x=np.concatenate([steps, steps[::-1]]), y=np.concatenate([values + err, (values - err)[::-1]]),
                fill="toself", fillcolor=_rgba(palette[run], 0.18), line=dict(width=0), hoverinfo="skip", mode="lines",
                legendgroup=run, showlegend=False, name=f"{run} · ± stderr",
            ))
        fig.add_trace(_line(steps, values, run=run, label="trace", color=palette[run], name=f"{run} · trace",
                            markers=_markers_needed(steps)))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="tr(H) (± 1 standard error)")
    return _finish(fig, title, height)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


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
    palette = _colors_for(names, colors)
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
    return _finish(fig, title, height)


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
    return _finish(fig, title, height)


# -- sharpness -------------------------------------------------------------------------------------
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
    series = _Series(scalars, ["sharpness"] if scalars is not None and "probe" in scalars.columns
                     and (scalars["probe"] == "sharpness").any() else None)
    present = [k for k in SHARPNESS_MEASURES if any(k in series.keys(r) for r in series.runs)]
    if not present:
        return empty_figure("No sharpness measures recorded.", title=title, height=height or 320)
    runs = [r for r in series.runs if series.keys(r) & set(present)]
    palette = _colors_for(runs, colors)
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
            fig.add_trace(_line(steps, values, run=run, label=SHARPNESS_MEASURES[key], color=palette[run],
                                name=run, show_legend=run not in legend_shown, markers=_markers_needed(steps)),
                          row=row, col=col)
            legend_shown.add(run)
        if values_all and _log_useful(np.concatenate(values_all)):
            fig.update_yaxes(type="log", row=row, col=col)
        bottom_of_column = index + cols >= len(present)
        fig.update_xaxes(title_text="training step" if bottom_of_column else None, row=row, col=col)
    fig = _finish(fig, title, height or 240 * rows + 110)
    fig.update_annotations(font_size=13)
    return fig


# -- neural collapse -------------------------------------------------------------------------------
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
    series = _Series(scalars, ["collapse"] if scalars is not None and "probe" in scalars.columns
                     and (scalars["probe"] == "collapse").any() else None)
    all_keys = {k for _, keys in _COLLAPSE_PANELS for k, _ in keys}
    runs = [r for r in series.runs if series.keys(r) & all_keys]
    if not runs:
        return empty_figure("No neural-collapse measures recorded.", title=title, height=height)
    palette = _colors_for(runs, colors)
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p for p, _ in _COLLAPSE_PANELS],
                        horizontal_spacing=0.1, vertical_spacing=0.17)
    legend_shown: set[str] = set()
    for index, (_, keys) in enumerate(_COLLAPSE_PANELS):
        row, col = index // 2 + 1, index % 2 + 1
        for run in runs:
            for rank, (key, label) in enumerate(keys):
                for prefix, dash, split in (("", _TRAIN_DASH, "train"), ("test_", _TEST_DASH, "test")):
                    found = series.get(run, prefix + key)
                    if found is None:
                        continue
                    steps, values = found
                    values = np.where(values > 0, values, np.nan)
                    show = (run, split) not in legend_shown
                    legend_shown.add((run, split))
                    fig.add_trace(_line(steps, values, run=run, label=f"{split} {label}", color=palette[run],
                                        dash=dash if rank == 0 else "dot", width=2.2 if rank == 0 else 1.2,
                                        opacity=1.0 if rank == 0 else 0.6, show_legend=show,
                                        name=f"{run} · {split}", markers=_markers_needed(steps)), row=row, col=col)
        fig.update_yaxes(type="log", row=row, col=col)
        fig.update_xaxes(title_text="training step" if row == 2 else None, row=row, col=col)
    fig = _finish(fig, title, height)
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
    return _finish(fig, title if title is not None else default, height)


# -- grokking --------------------------------------------------------------------------------------
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
    ("Accuracy", (("train_accuracy", "train", _TRAIN_DASH), ("test_accuracy", "test", _TEST_DASH)), ".1%"),
    ("Loss (log scale)", (("train_loss", "train", _TRAIN_DASH), ("test_loss", "test", _TEST_DASH)), ".4g"),
    ("Softmax-Collapse fraction", (("sc_fraction", "SC fraction", _TRAIN_DASH),), ".2%"),
    ("NLM alignment cos(−∇L, NLM)", (("nlm_cosine", "NLM cosine", _TRAIN_DASH),), ".3f"),
    ("Weight norm ‖θ‖", (("weight_norm", "weight norm", _TRAIN_DASH),), ".4g"),
    ("Mean logit norm", (("logit_norm", "logit norm", _TRAIN_DASH),), ".4g"),
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
    series = _Series(scalars, probes)
    all_keys = {k for _, keys, _ in _GROKKING_PANELS for k, _, _ in keys}
    runs = [r for r in series.runs if series.keys(r) & all_keys]
    if not runs:
        return empty_figure("No grokking diagnostics recorded.", title=title, height=height)
    palette = _colors_for(runs, colors)
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
                fig.add_trace(_line(steps, values, run=run, label=label, color=palette[run], dash=dash,
                                    show_legend=show, name=f"{run} · {split}", fmt=fmt,
                                    markers=_markers_needed(steps)), row=row, col=col)
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
    fig = _finish(fig, title, height)
    fig.update_annotations(font_size=13)
    return fig
