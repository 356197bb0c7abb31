"""The look shared by every figure: palette, fonts, template, line traces and axis tidying.

One colour per run (:func:`run_colors`), train solid and test dashed (:data:`TRAIN_DASH`,
:data:`TEST_DASH`), and :func:`finish` applies the template and readable log-axis ticks to a built figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

# A qualitative palette that stays distinguishable on white and for common colour-vision deficiencies.
PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#B279A2", "#EECA3B", "#9D755D", "#FF9DA6", "#79706E",
)
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
TEXT = "#1f2937"
GRID = "#e5e7eb"

TEMPLATE = go.layout.Template(
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
TRAIN_DASH, TEST_DASH = "solid", "dash"


def run_colors(runs: Sequence[str]) -> dict[str, str]:
    """A colour per run, assigned from :data:`PALETTE` in the given order (cycling after ten runs)."""
    return {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}


def empty_figure(message: str, *, title: str | None = None, height: int = 320) -> go.Figure:
    """A figure with no traces and ``message`` in its middle: what a view shows when it has no data."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#6b7280"))
    fig.update_layout(template=TEMPLATE, height=height, title=title,
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def finish(fig: go.Figure, title: str | None, height: int, *, legend_title: str | None = None) -> go.Figure:
    """The last step of every figure: the shared template, title, height and legend, and tidy log ticks."""
    fig.update_layout(template=TEMPLATE, height=height, title=title, hovermode="closest",
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
        ticks = log_ticks(np.log10(lo), np.log10(hi))
        if len(ticks) >= 3:  # fewer: a narrow range, where Plotly's own plain labels read best
            layout_axis.update(tickmode="array", tickvals=ticks, ticktext=[f"{t:.3g}" for t in ticks])


def colors_for(runs: Sequence[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    """The colour of each run: the one given in ``colors`` where there is one, else its :func:`run_colors` one."""
    given = dict(colors or {})
    fallback = run_colors(runs)
    return {run: given.get(run, fallback[run]) for run in runs}


def rgba(hex_color: str, alpha: float) -> str:
    """``#rrggbb`` as a CSS ``rgba(r,g,b,alpha)`` colour, for translucent bands in a run's colour."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _hover(run: str, label: str, fmt: str = ".4g") -> str:
    """Hover text of a series over steps: run in bold, the step, and ``label`` with the value in ``fmt``."""
    return f"<b>{run}</b><br>step %{{x:,}}<br>{label}: %{{y:{fmt}}}<extra></extra>"


def run_line(x: np.ndarray, y: np.ndarray, *, run: str, label: str, color: str, dash: str = "solid",
             width: float = 2.0, opacity: float = 1.0, show_legend: bool = True, name: str | None = None,
             fmt: str = ".4g", markers: bool = False) -> go.Scatter:
    """One run's series as a line in the run's colour, grouped in the legend by run (so one click hides a run)."""
    return go.Scatter(
        x=x, y=y, mode="lines+markers" if markers else "lines", name=name or f"{run} · {label}",
        legendgroup=run, showlegend=show_legend, opacity=opacity,
        line=dict(color=color, dash=dash, width=width), marker=dict(size=5, color=color),
        hovertemplate=_hover(run, label, fmt),
    )


def markers_needed(steps: np.ndarray) -> bool:
    """Sparse series (≤ 30 points) also get point markers, so each stored step shows."""
    return len(steps) <= 30


def log_useful(values: np.ndarray) -> bool:
    """True when every finite value is positive and they span more than two decades (log axis reads better)."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(finite > 0)) and float(finite.max() / finite.min()) > 100.0


def log_ticks(lo: float, hi: float) -> list[float]:
    """Readable tick values (1, 2, 5 × 10^k) between 10^lo and 10^hi for a log-valued colour bar."""
    ticks = [m * 10.0 ** e for e in range(int(np.floor(lo)) - 1, int(np.ceil(hi)) + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if lo - 1e-9 <= np.log10(t) <= hi + 1e-9]
    if len(inside) > 8:
        inside = [t for t in inside if f"{t:.1e}".startswith("1")]
    return inside or [10.0 ** lo, 10.0 ** hi]
