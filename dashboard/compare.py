"""The Compare tab: two runs, or two checkpoints of one run, side by side on shared scales with their difference.

Run A and run B each have a checkpoint slider (its marks thinned as on the main slider). The tab shows the
loss (or accuracy) surfaces of the two ``slices`` results and B − A, and the two Hessian spectral densities
and their difference (:mod:`dashboard.figures.compare`). With one run in the stores, A starts at its first
checkpoint and B at its last. The view function and the callbacks are plain functions of their inputs, as
in :mod:`dashboard.views` and :mod:`dashboard.callbacks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import figures, views
from dashboard.data import Catalog, Tokens
from dashboard.figures.compare import resample
from dashboard.layout import checkpoint_label, slider_marks
from dashboard.views import View

GRAPHS = ["compare-surface", "compare-density"]
SIDES = ("a", "b")


def _side(side: str) -> html.Div:
    return html.Div(className="control control--compare", children=[
        html.Label(f"Run {side.upper()}", htmlFor=f"compare-{side}-run"),
        dcc.Dropdown(id=f"compare-{side}-run", clearable=False, placeholder="Select a run…"),
        html.Div(className="slider-label", children=[
            html.Span(id=f"compare-{side}-label", className="checkpoint-label", children="no checkpoints yet"),
        ]),
        dcc.Slider(id=f"compare-{side}-checkpoint", min=0, max=0, step=1, value=0, marks={}, included=False,
                   updatemode="mouseup", disabled=True),
        dcc.Store(id=f"compare-{side}-steps", data=[]),
    ])


def controls() -> list[Any]:
    """The tab's own controls: run and checkpoint of A and of B, and the surface metric."""
    return [html.Div(className="control-row", children=[
        _side("a"), _side("b"),
        html.Div(className="control", children=[
            html.Label("Surfaces of", htmlFor="compare-metric"),
            dcc.RadioItems(id="compare-metric", value="loss", inline=True, className="radio", options=[
                {"label": "train loss", "value": "loss"}, {"label": "train accuracy", "value": "accuracy"},
                {"label": "test loss", "value": "test_loss"}, {"label": "test accuracy", "value": "test_accuracy"},
            ]),
        ]),
    ])]


def comparison(catalog: Catalog, tokens: Tokens | None, a_key: str | None, a_step: int | None, b_key: str | None,
               b_step: int | None, metric: str = "loss", previous: str | None = None) -> View | None:
    """Surfaces and spectral densities of A and B at the checkpoints nearest their steps, and B − A."""
    refs = [catalog.ref(k, tokens) if k else None for k in (a_key, b_key)]
    if any(r is None for r in refs):
        message = "Choose run A and run B above."
        return View([figures.empty_figure(message) for _ in GRAPHS], message, False, "compare-none")
    ra, rb = refs
    shown = {(side, probe): catalog.nearest_step(ref, probe, step, tokens)
             for side, ref, step in (("a", ra, a_step), ("b", rb, b_step)) for probe in ("slices", "hessian")}
    fingerprint = views._fp(catalog, [ra, rb], ["slices", "hessian"], tokens, "compare", metric,
                            tuple(sorted(shown.items())))
    if fingerprint == previous:
        return None
    figs, missing = [], []
    for probe, keys, draw, what in (
        ("slices", None, figures.surface_comparison_figure, f"{metric.replace('_', ' ')} surfaces"),
        ("hessian", ["density_grid", "density_curve"], figures.density_comparison_figure, "Hessian spectral densities"),
    ):
        sa, sb = shown[("a", probe)], shown[("b", probe)]
        missing += [r.key for r, s in ((ra, sa), (rb, sb)) if s is None and r.key not in missing]
        if sa is None or sb is None:
            figs.append(figures.empty_figure(f"No {probe} results for run {'A' if sa is None else 'B'}.",
                                             title=f"{what.capitalize()} compared"))
            continue
        names = (f"{ra.key} @ {sa:,}", f"{rb.key} @ {sb:,}")
        a, b = catalog.arrays(ra, probe, sa, tokens, keys=keys), catalog.arrays(rb, probe, sb, tokens, keys=keys)
        options = {"metric": metric} if probe == "slices" else {}
        title = f"{what.capitalize()}: A = {names[0]}, B = {names[1]}"
        figs.append(draw(a, b, names=names, title=title, **options))
    has_data = any(len(f.data) for f in figs)
    notice = None
    if missing:
        notice = f"Nothing to compare yet for {', '.join(missing)} — run `landscape analyze --probes slices,hessian`."
    return View([views._graph_uirevision(f, f"{g}-{metric}") for f, g in zip(figs, GRAPHS)],
                notice if not has_data or missing else None, has_data, fingerprint)


def comparison_csv(catalog: Catalog, tokens: Tokens | None, a_key: str | None, a_step: int | None,
                   b_key: str | None, b_step: int | None, metric: str = "loss") -> tuple[pd.DataFrame, str]:
    """The compared surfaces as one table: x, y, A, B and B − A on A's grid (B resampled where grids differ)."""
    refs = [catalog.ref(k, tokens) if k else None for k in (a_key, b_key)]
    steps = [catalog.nearest_step(r, "slices", s, tokens) if r is not None else None
             for r, s in zip(refs, (a_step, b_step))]
    if any(r is None for r in refs) or any(s is None for s in steps):
        return pd.DataFrame(columns=["x", "y", "a", "b", "b_minus_a"]), "compare.csv"
    a, b = (catalog.arrays(r, "slices", s, tokens, keys=["x", "y", metric]) for r, s in zip(refs, steps))
    if metric not in a or metric not in b:
        return pd.DataFrame(columns=["x", "y", "a", "b", "b_minus_a"]), "compare.csv"
    za = np.asarray(a[metric], dtype=float)
    zb = resample(np.asarray(b["x"], float), np.asarray(b["y"], float), np.asarray(b[metric], float),
                  np.asarray(a["x"], float), np.asarray(a["y"], float))
    xx, yy = np.meshgrid(a["x"], a["y"])
    frame = pd.DataFrame({"run_a": refs[0].key, "step_a": steps[0], "run_b": refs[1].key, "step_b": steps[1],
                          "metric": metric, "x": xx.ravel(), "y": yy.ravel(), "a": za.ravel(), "b": zb.ravel(),
                          "b_minus_a": (zb - za).ravel()})
    return frame, f"compare_{views._safe(refs[0].key)}_{steps[0]}_vs_{views._safe(refs[1].key)}_{steps[1]}.csv"


class CompareCallbacks:
    """The tab's callback bodies over one :class:`Catalog`."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def runs(self, tokens: list | None, a: str | None, b: str | None) -> tuple[Any, ...]:
        """Both run pickers list every run; A defaults to the first run, B to the second (or the first)."""
        keys = [r.key for r in self.catalog.runs(tokens)]
        options = [{"label": k, "value": k} for k in keys]
        new_a = a if a in keys else (keys[0] if keys else None)
        new_b = b if b in keys else (keys[1] if len(keys) > 1 else new_a)
        return options, options, new_a if new_a != a else no_update, new_b if new_b != b else no_update

    def side(self, run: str | None, tokens: list | None, index: int | None, old_steps: list[int] | None,
             first: bool = False) -> tuple[Any, ...]:
        """A side's slider: range and thinned marks over its run's checkpoints; it starts on the last one (on
        the first with ``first``, for side A when both sides show one run) and keeps its step afterwards."""
        ref = self.catalog.ref(run, tokens) if run else None
        steps = self.catalog.steps(ref, None, tokens) if ref is not None else []
        if steps == list(old_steps or []) and index is not None:
            raise PreventUpdate
        if not steps:
            return 0, {}, 0, True, steps
        old = list(old_steps or [])
        if old and index is not None and old[:1] == steps[:1]:
            step = old[max(0, min(int(index), len(old) - 1))]
            value = min(range(len(steps)), key=lambda i: (abs(steps[i] - step), i))
        else:
            value = 0 if first else len(steps) - 1
        return len(steps) - 1, slider_marks(steps), value, False, steps

    def view(self, tab: str | None, a: str | None, ia: int | None, steps_a: list[int] | None, b: str | None,
             ib: int | None, steps_b: list[int] | None, metric: str | None, tokens: list | None,
             previous: str | None) -> tuple[Any, ...]:
        if tab != "compare":
            raise PreventUpdate
        view = comparison(self.catalog, tokens, a, _step(ia, steps_a), b, _step(ib, steps_b), metric or "loss", previous)
        if view is None:
            raise PreventUpdate
        from dashboard.callbacks import _HIDDEN, _SHOWN, notice_children

        return (*view.figures, notice_children(view.notice), _SHOWN if view.notice else _HIDDEN,
                _SHOWN if view.has_data else _HIDDEN, view.fingerprint)

    def download(self, n_clicks: int | None, a: str | None, ia: int | None, steps_a: list[int] | None,
                 b: str | None, ib: int | None, steps_b: list[int] | None, metric: str | None,
                 tokens: list | None) -> dict[str, Any]:
        if not n_clicks:
            raise PreventUpdate
        frame, filename = comparison_csv(self.catalog, tokens, a, _step(ia, steps_a), b, _step(ib, steps_b),
                                         metric or "loss")
        return dcc.send_data_frame(frame.to_csv, filename, index=False)


def _step(index: int | None, steps: Sequence[int] | None) -> int | None:
    if not steps:
        return None
    return int(steps[-1] if index is None else steps[max(0, min(int(index), len(steps) - 1))])


def register_compare(app: dash.Dash, cb: CompareCallbacks) -> None:
    """Attach the Compare tab's callbacks to ``app``."""
    app.callback(Output("compare-a-run", "options"), Output("compare-b-run", "options"),
                 Output("compare-a-run", "value"), Output("compare-b-run", "value"),
                 Input("tokens", "data"), State("compare-a-run", "value"), State("compare-b-run", "value"))(cb.runs)
    for side in SIDES:
        def side_callback(run: str | None, tokens: list | None, index: int | None, old: list[int] | None,
                          other: str | None, _side: str = side) -> tuple[Any, ...]:
            return cb.side(run, tokens, index, old, first=_side == "a" and run is not None and run == other)

        app.callback(Output(f"compare-{side}-checkpoint", "max"), Output(f"compare-{side}-checkpoint", "marks"),
                     Output(f"compare-{side}-checkpoint", "value"), Output(f"compare-{side}-checkpoint", "disabled"),
                     Output(f"compare-{side}-steps", "data"),
                     Input(f"compare-{side}-run", "value"), Input("tokens", "data"),
                     State(f"compare-{side}-checkpoint", "value"), State(f"compare-{side}-steps", "data"),
                     State(f"compare-{'b' if side == 'a' else 'a'}-run", "value"))(side_callback)
        app.callback(Output(f"compare-{side}-label", "children"),
                     Input(f"compare-{side}-checkpoint", "value"), Input(f"compare-{side}-steps", "data"))(
            lambda index, steps: checkpoint_label(list(steps or []), index))
    state = [Input("compare-a-run", "value"), Input("compare-a-checkpoint", "value"), Input("compare-a-steps", "data"),
             Input("compare-b-run", "value"), Input("compare-b-checkpoint", "value"), Input("compare-b-steps", "data"),
             Input("compare-metric", "value")]
    app.callback(*[Output(g, "figure") for g in GRAPHS], Output("compare-notice", "children"),
                 Output("compare-notice", "style"), Output("compare-content", "style"),
                 Output("compare-fingerprint", "data"),
                 Input("tabs", "value"), *state, Input("tokens", "data"), State("compare-fingerprint", "data"))(cb.view)
    app.callback(Output("compare-download", "data"), Input("compare-download-button", "n_clicks"),
                 *[State(s.component_id, s.component_property) for s in state], State("tokens", "data"),
                 prevent_initial_call=True)(cb.download)
