"""The training path over the loss surface on the trajectory's PCA plane, as a Plotly animation.

The ``slices`` probe stores, with the last checkpoint of a run of three or more, the plane of the two main
PCA directions of the trajectory (``pca_x``, ``pca_y``, ``pca_loss`` …) and every checkpoint's position
on it (``path_x``, ``path_y``, ``path_steps``). The animation draws the contour map once and adds the
path point by point: frame k shows the path up to checkpoint k and marks it. A play/pause button and a
slider drive it; :func:`animation_frames` turns the frames into still figures (for GIF or MP4 export).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from dashboard.figures._style import compact_step, empty_figure, finish
from dashboard.figures.surfaces import _METRIC_LABEL, contour_trace, plane_names

MAX_FRAMES = 60          # longer paths are thinned to this many frames (the first and last always kept)
MAX_SLIDER_LABELS = 8    # slider ticks labelled with their step; the rest stay unlabelled so labels never overlap
PATH_COLOR = "#e11d48"
_PATH_TRACES = [2, 3]    # the traces a frame replaces: the path so far and the current point


def frame_indices(n: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Indices of the path points that get a frame: all of them, or ``max_frames`` evenly spaced ones."""
    if n <= 0:
        return []
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_frames)})


def _moving(px: np.ndarray, py: np.ndarray, steps: np.ndarray, k: int) -> list[go.Scatter]:
    """The two traces of frame k: the path up to point k and point k itself."""
    return [
        go.Scatter(x=px[:k + 1], y=py[:k + 1], text=steps[:k + 1], mode="lines+markers", name="training path",
                   line=dict(color=PATH_COLOR, width=2.5),
                   marker=dict(size=6, color=PATH_COLOR, line=dict(color="white", width=1)),
                   hovertemplate="step %{text:,}<extra>training path</extra>"),
        go.Scatter(x=[px[k]], y=[py[k]], text=[steps[k]], mode="markers", name=f"step {int(steps[k]):,}",
                   marker=dict(symbol="star", size=17, color="#facc15", line=dict(color="#111827", width=1.2)),
                   hovertemplate="step %{text:,}<extra>checkpoint</extra>"),
    ]


def _step_note(step: int) -> dict:
    return dict(text=f"step {step:,}", x=0.01, y=0.99, xref="paper", yref="paper", xanchor="left", yanchor="top",
                showarrow=False, font=dict(size=14), bgcolor="rgba(255,255,255,0.8)")


def trajectory_animation_figure(arrays: Mapping[str, np.ndarray], *, metric: str = "loss", title: str | None = None,
                                height: int = 560, max_frames: int = MAX_FRAMES, frame_ms: int = 350) -> go.Figure:
    """The training path added checkpoint by checkpoint over the ``metric`` contours of the PCA plane.

    ``arrays`` is the last-checkpoint result of the ``slices`` probe (``pca_x``, ``pca_y``,
    ``pca_{metric}``, ``path_x``, ``path_y``, ``path_steps``, optionally ``explained_variance``). Trace 0
    is the contour map (log colour scale for a loss), 1 the whole path faintly (so the extent shows from
    the first frame), 2 the path so far, 3 the current checkpoint. The figure opens on the whole path; Play
    runs it from the first checkpoint, ``frame_ms`` per frame. Paths longer than ``max_frames`` points
    are thinned to that many frames (every point is still drawn).
    """
    if metric not in _METRIC_LABEL:
        raise ValueError(f"metric must be one of {', '.join(_METRIC_LABEL)}, got {metric!r}.")
    needed = ("pca_x", "pca_y", f"pca_{metric}", "path_x", "path_y")
    if not all(k in arrays for k in needed):
        return empty_figure("No trajectory on the PCA plane in this result: the slices probe stores it with the "
                            "last checkpoint once a run has at least three.", title=title, height=height)
    x = np.asarray(arrays["pca_x"], dtype=float)
    y = np.asarray(arrays["pca_y"], dtype=float)
    z = np.asarray(arrays[f"pca_{metric}"], dtype=float)
    if z.shape != (len(y), len(x)):
        raise ValueError(f"arrays['pca_{metric}'] must have shape (len(y), len(x)) = {(len(y), len(x))}, got {z.shape}.")
    px = np.asarray(arrays["path_x"], dtype=float)
    py = np.asarray(arrays["path_y"], dtype=float)
    steps = np.asarray(arrays.get("path_steps", np.arange(len(px))), dtype=np.int64)
    if not (len(px) == len(py) == len(steps)) or len(px) == 0:
        raise ValueError("arrays path_x, path_y and path_steps must be non-empty and of one length.")
    names = plane_names(arrays, use_pca=True)
    last = len(px) - 1
    fig = go.Figure()
    fig.add_trace(contour_trace(x, y, z, metric=metric, names=names))
    fig.add_trace(go.Scatter(x=px, y=py, mode="lines", name="whole path", hoverinfo="skip", showlegend=False,
                             line=dict(color=PATH_COLOR, width=1, dash="dot"), opacity=0.45))
    for trace in _moving(px, py, steps, last):
        fig.add_trace(trace)

    indices = frame_indices(len(px), max_frames)
    fig.frames = [go.Frame(name=str(int(steps[k])), data=_moving(px, py, steps, k), traces=_PATH_TRACES,
                           layout=dict(annotations=[_step_note(int(steps[k]))])) for k in indices]
    labelled = set(frame_indices(len(indices), MAX_SLIDER_LABELS))
    slider_steps = [dict(method="animate", label=compact_step(int(steps[k])) if i in labelled else "",
                         args=[[str(int(steps[k]))], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                         transition=dict(duration=0))])
                    for i, k in enumerate(indices)]
    play = dict(frame=dict(duration=frame_ms, redraw=True), transition=dict(duration=0), fromcurrent=False,
                mode="immediate")
    pause = dict(frame=dict(duration=0, redraw=False), transition=dict(duration=0), mode="immediate")
    fig.update_layout(
        annotations=[_step_note(int(steps[last]))],
        updatemenus=[dict(type="buttons", direction="left", x=0.0, xanchor="left", y=-0.2, yanchor="top",
                          pad=dict(r=8, t=0), showactive=False,
                          buttons=[dict(label="▶ Play", method="animate", args=[None, play]),
                                   dict(label="❚❚ Pause", method="animate", args=[[None], pause])])],
        sliders=[dict(active=len(indices) - 1, steps=slider_steps, x=0.24, len=0.76, y=-0.17, yanchor="top",
                      pad=dict(t=0, b=0), currentvalue=dict(visible=False), ticklen=4,
                      font=dict(size=11))],
    )
    fig.update_xaxes(title_text=names[0])
    fig.update_yaxes(title_text=names[1])
    fig = finish(fig, title, height)
    fig.update_layout(legend=dict(orientation="h", x=1.0, xanchor="right", y=1.02, yanchor="bottom"),
                      margin=dict(l=70, r=30, t=80, b=150))
    return fig


def animation_frames(fig: go.Figure) -> list[go.Figure]:
    """One still figure per frame of an animated figure (its controls removed), for GIF or MP4 export."""
    layout = go.Layout(fig.layout)
    layout.updatemenus, layout.sliders = (), ()
    layout.margin.b = 60
    stills = []
    for frame in fig.frames:
        data = [type(trace)(trace) for trace in fig.data]
        for index, trace in zip(frame.traces or range(len(frame.data)), frame.data):
            data[index] = type(trace)(trace)
        still = go.Figure(data=data, layout=layout)
        if frame.layout is not None:
            still.update_layout(frame.layout)
        stills.append(still)
    return stills
