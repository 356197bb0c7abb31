"""The page's behaviour: callback bodies as plain methods of :class:`Callbacks`, wired to Dash by :func:`register`.

Tab views compute only while their tab is selected and redraw only when the fingerprint of their data
(or of their inputs) changed, so the 2 s live poll costs one cheap query per store when nothing is new.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import views
from dashboard.compare import CompareCallbacks, register_compare
from dashboard.data import Catalog
from dashboard.layout import MAX_INITIAL_RUNS, TAB_GRAPHS, checkpoint_label, slider_marks, summary_cards
from dashboard.views import TABS, View

_HIDDEN = {"display": "none"}
_JOIN = "||"  # joins the fingerprints of the two landscape views
_SHOWN: dict[str, str] = {}


def step_at(index: int | None, steps: Sequence[int] | None) -> int | None:
    """The training step at slider position ``index`` (clamped), or None without checkpoints."""
    if not steps:
        return None
    if index is None:
        return int(steps[-1])
    return int(steps[max(0, min(int(index), len(steps) - 1))])


def notice_children(text: str | None) -> list[Any]:
    """A notice sentence with its `command` parts set as code."""
    if not text:
        return []
    parts = re.split(r"`([^`]*)`", text)
    return [html.Code(p) if i % 2 else p for i, p in enumerate(parts) if p]


class Callbacks:
    """Callback bodies over one :class:`Catalog`; each method is a plain function of the inputs."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- polling and controls ------------------------------------------------------------------------
    def poll(self, n_intervals: int | None, current: list | None) -> tuple[Any, Any]:
        """New change tokens (and the live label) when any store changed; no update otherwise."""
        tokens = self.catalog.tokens()
        if tokens == current:
            raise PreventUpdate
        return tokens, f"● live · updated {time.strftime('%H:%M:%S')}"

    def run_options(self, tokens: list | None, selected: list[str] | None,
                    previous_options: list[dict] | None = None) -> tuple[Any, Any]:
        """Run picker options after a store changed. The selection is kept (runs that vanished are dropped);
        when the stores had no runs before, the first runs to appear are selected."""
        keys = [r.key for r in self.catalog.runs(tokens)]
        options = [{"label": k, "value": k} for k in keys]
        if options == (previous_options or []):
            options = no_update
        kept = [k for k in (selected or []) if k in keys]
        if not previous_options and not kept:
            kept = keys[:MAX_INITIAL_RUNS]
        return options, kept if kept != (selected or []) else no_update

    def focus_options(self, selected: list[str] | None, focus: str | None) -> tuple[Any, Any]:
        selected = list(selected or [])
        options = [{"label": k, "value": k} for k in selected]
        value = focus if focus in selected else (selected[0] if selected else None)
        return options, value

    def checkpoint(self, focus: str | None, tokens: list | None, index: int | None,
                   old_steps: list[int] | None) -> tuple[Any, ...]:
        """Slider range and marks for the focus run's checkpoints; the slider follows the newest checkpoint
        when it was on the last one, and otherwise stays on the same step."""
        ref = self.catalog.ref(focus, tokens) if focus else None
        steps = self.catalog.steps(ref, None, tokens) if ref is not None else []
        old_steps = list(old_steps or [])
        if steps == old_steps:
            raise PreventUpdate
        if not steps:
            return 0, {}, 0, True, steps
        old_step = step_at(index, old_steps)
        at_end = not old_steps or index is None or int(index) >= len(old_steps) - 1
        if at_end or old_step is None:
            value = len(steps) - 1
        else:
            value = min(range(len(steps)), key=lambda i: (abs(steps[i] - old_step), i))
        return len(steps) - 1, slider_marks(steps), value, False, steps

    def checkpoint_text(self, index: int | None, steps: list[int] | None) -> str:
        return checkpoint_label(list(steps or []), index)

    def summary(self, selected: list[str] | None, tokens: list | None) -> list[Any]:
        """One card per selected run (or a hint when the stores hold no run yet)."""
        if not self.catalog.runs(tokens):
            return [html.Div(className="summary-empty", children=notice_children(
                "No runs in the store yet — train with the `landscape.callbacks.Monitor` callback or run "
                "`landscape analyze`; this page updates by itself."))]
        refs = self.catalog.refs(selected, tokens)
        return summary_cards([self.catalog.summary(r, tokens) for r in refs], views.colors(self.catalog, tokens))

    # -- tab views -----------------------------------------------------------------------------------
    @staticmethod
    def _emit(view: View | None, *, with_notice: bool = True) -> tuple[Any, ...]:
        if view is None:  # the data behind the view did not change
            raise PreventUpdate
        out: list[Any] = list(view.figures)
        if with_notice:
            out += [notice_children(view.notice), _SHOWN if view.notice else _HIDDEN,
                    _SHOWN if view.has_data else _HIDDEN]
        return (*out, view.fingerprint)

    @staticmethod
    def _active(tab: str | None, wanted: str) -> None:
        if tab != wanted:
            raise PreventUpdate

    def overview(self, tab: str, selected: list[str], tokens: list, previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "overview")
        return self._emit(views.overview(self.catalog, tokens, selected or [], previous))

    def landscape(self, tab: str, selected: list[str], focus: str | None, index: int | None, steps: list[int],
                  metric: str, plane: str, line_kind: str, tokens: list, previous: str | None) -> tuple[Any, ...]:
        """The surface (focus run) and the 1-D lines (selected runs) at the selected checkpoint."""
        self._active(tab, "landscape")
        step = step_at(index, steps)
        before = (previous or "").split(_JOIN, 1) if previous and _JOIN in previous else [None, None]
        surface = views.surface(self.catalog, tokens, focus, step, metric or "loss", plane or "random", before[0])
        line = views.slices_1d(self.catalog, tokens, selected or [], step, before[1], line_kind or "slice")
        if surface is None and line is None:
            raise PreventUpdate
        refs = self.catalog.refs(selected, tokens)
        missing = [r.key for r in refs if not self.catalog.has(r, "slices", tokens)]
        notice = views.missing_notice("slices", missing, len(refs)) if refs else "Select one or more runs above."
        if surface is not None and surface.notice and surface.has_data:  # e.g. the PCA plane is not there yet
            notice = " ".join(n for n in (notice, surface.notice) if n)
        has_data = len(missing) < len(refs)
        fingerprint = (surface.fingerprint if surface else before[0]) + _JOIN + (line.fingerprint if line else before[1])
        return (surface.figures[0] if surface else no_update, line.figures[0] if line else no_update,
                notice_children(notice), _SHOWN if notice else _HIDDEN, _SHOWN if has_data else _HIDDEN, fingerprint)

    def trajectory(self, tab: str, focus: str | None, metric: str | None, tokens: list,
                   previous: str | None) -> tuple[Any, ...]:
        """The focus run's training path on the PCA plane (train metrics only: the plane holds no test grid)."""
        self._active(tab, "landscape")
        view = views.trajectory(self.catalog, tokens, focus, (metric or "loss").removeprefix("test_"), previous)
        return self._emit(view, with_notice=False)

    def hessian(self, tab: str, selected: list[str], focus: str | None, tokens: list,
                previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "hessian")
        return self._emit(views.hessian(self.catalog, tokens, selected or [], focus, previous))

    def hessian_density(self, tab: str, selected: list[str], index: int | None, steps: list[int], tokens: list,
                        previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "hessian")
        view = views.density(self.catalog, tokens, selected or [], step_at(index, steps), previous)
        return self._emit(view, with_notice=False)

    def hessian_preconditioned(self, tab: str, selected: list[str], tokens: list,
                               previous: str | None) -> tuple[Any, ...]:
        """λmax(P⁻¹H) against its threshold; the graph is shown only when a selected run has it."""
        self._active(tab, "hessian")
        view = views.preconditioned(self.catalog, tokens, selected or [], previous)
        if view is None:
            raise PreventUpdate
        return view.figures[0], _SHOWN if view.has_data else _HIDDEN, view.fingerprint

    def sharpness(self, tab: str, selected: list[str], tokens: list, previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "sharpness")
        return self._emit(views.sharpness(self.catalog, tokens, selected or [], previous))

    def collapse(self, tab: str, selected: list[str], tokens: list, previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "collapse")
        return self._emit(views.collapse(self.catalog, tokens, selected or [], previous))

    def collapse_cosine(self, tab: str, focus: str | None, index: int | None, steps: list[int], tokens: list,
                        previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "collapse")
        view = views.cosine(self.catalog, tokens, focus, step_at(index, steps), previous)
        return self._emit(view, with_notice=False)

    def grokking(self, tab: str, selected: list[str], tokens: list, previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "grokking")
        return self._emit(views.grokking(self.catalog, tokens, selected or [], previous))

    def dynamics(self, tab: str, selected: list[str], tokens: list, previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "dynamics")
        return self._emit(views.dynamics(self.catalog, tokens, selected or [], previous))

    def weights(self, tab: str, selected: list[str], focus: str | None, tokens: list,
                previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "weights")
        return self._emit(views.weights(self.catalog, tokens, selected or [], focus, previous))

    def weights_esd(self, tab: str, focus: str | None, index: int | None, steps: list[int], layer: str | None,
                    tokens: list, previous: str | None) -> tuple[Any, ...]:
        self._active(tab, "weights")
        view = views.weights_esd(self.catalog, tokens, focus, step_at(index, steps), layer, previous)
        return self._emit(view, with_notice=False)

    def weights_layer_options(self, focus: str | None, tokens: list | None, layer: str | None) -> tuple[Any, Any]:
        """The focus run's weight matrices as the layer picker's options; the choice is kept while it exists."""
        names = views.weight_layers(self.catalog, tokens, focus)
        options = [{"label": n, "value": n} for n in names]
        value = layer if layer in names else None
        return options, value if value != layer else no_update

    # -- downloads -----------------------------------------------------------------------------------
    def download(self, tab: str, n_clicks: int | None, selected: list[str], focus: str | None,
                 index: int | None, steps: list[int], metric: str | None, plane: str | None,
                 tokens: list) -> dict[str, Any]:
        """The tab's data as a CSV file for ``dcc.Download``."""
        if not n_clicks:
            raise PreventUpdate
        frame, filename = views.tab_csv(self.catalog, tokens, tab, selected or [], focus, step_at(index, steps),
                                        metric or "loss", plane or "random")
        return dcc.send_data_frame(frame.to_csv, filename, index=False)


def _view_outputs(tab: str, graphs: Sequence[str], fingerprint: str, *, with_notice: bool = True) -> list[Output]:
    outputs = [Output(g, "figure") for g in graphs]
    if with_notice:
        outputs += [Output(f"{tab}-notice", "children"), Output(f"{tab}-notice", "style"),
                    Output(f"{tab}-content", "style")]
    return outputs + [Output(fingerprint, "data")]


def register(app: dash.Dash, cb: Callbacks) -> None:
    """Attach every callback of the page to ``app``."""
    app.callback(Output("tokens", "data"), Output("live-status", "children"),
                 Input("poll", "n_intervals"), State("tokens", "data"), prevent_initial_call=True)(cb.poll)
    app.callback(Output("runs", "options"), Output("runs", "value"),
                 Input("tokens", "data"), State("runs", "value"), State("runs", "options"),
                 prevent_initial_call=True)(cb.run_options)
    app.callback(Output("focus", "options"), Output("focus", "value"),
                 Input("runs", "value"), State("focus", "value"), prevent_initial_call=True)(cb.focus_options)
    app.callback(Output("checkpoint", "max"), Output("checkpoint", "marks"), Output("checkpoint", "value"),
                 Output("checkpoint", "disabled"), Output("checkpoint-steps", "data"),
                 Input("focus", "value"), Input("tokens", "data"),
                 State("checkpoint", "value"), State("checkpoint-steps", "data"),
                 prevent_initial_call=True)(cb.checkpoint)
    app.callback(Output("checkpoint-label", "children"),
                 Input("checkpoint", "value"), Input("checkpoint-steps", "data"))(cb.checkpoint_text)
    app.callback(Output("summary", "children"), Input("runs", "value"), Input("tokens", "data"))(cb.summary)

    tab, runs, tokens = Input("tabs", "value"), Input("runs", "value"), Input("tokens", "data")
    focus, index, steps = Input("focus", "value"), Input("checkpoint", "value"), Input("checkpoint-steps", "data")

    def fingerprint(name: str) -> State:
        return State(name, "data")

    app.callback(*_view_outputs("overview", TAB_GRAPHS["overview"], "overview-fingerprint"),
                 tab, runs, tokens, fingerprint("overview-fingerprint"))(cb.overview)
    app.callback(*_view_outputs("landscape", ["landscape-surface", "landscape-slice"], "landscape-fingerprint"),
                 tab, runs, focus, index, steps, Input("surface-metric", "value"), Input("surface-plane", "value"),
                 Input("slice-line", "value"), tokens, fingerprint("landscape-fingerprint"))(cb.landscape)
    app.callback(*_view_outputs("landscape", ["landscape-trajectory"], "landscape-trajectory-fingerprint",
                                with_notice=False),
                 tab, focus, Input("surface-metric", "value"), tokens,
                 fingerprint("landscape-trajectory-fingerprint"))(cb.trajectory)
    app.callback(*_view_outputs("hessian", ["hessian-eigenvalues", "hessian-trace", "hessian-spectrogram"],
                                "hessian-fingerprint"),
                 tab, runs, focus, tokens, fingerprint("hessian-fingerprint"))(cb.hessian)
    app.callback(*_view_outputs("hessian", ["hessian-density"], "hessian-density-fingerprint", with_notice=False),
                 tab, runs, index, steps, tokens, fingerprint("hessian-density-fingerprint"))(cb.hessian_density)
    app.callback(Output("hessian-preconditioned", "figure"), Output("hessian-preconditioned-box", "style"),
                 Output("hessian-preconditioned-fingerprint", "data"),
                 tab, runs, tokens, fingerprint("hessian-preconditioned-fingerprint"))(cb.hessian_preconditioned)
    app.callback(*_view_outputs("sharpness", TAB_GRAPHS["sharpness"], "sharpness-fingerprint"),
                 tab, runs, tokens, fingerprint("sharpness-fingerprint"))(cb.sharpness)
    app.callback(*_view_outputs("collapse", ["collapse-measures"], "collapse-fingerprint"),
                 tab, runs, tokens, fingerprint("collapse-fingerprint"))(cb.collapse)
    app.callback(*_view_outputs("collapse", ["collapse-cosine"], "collapse-cosine-fingerprint", with_notice=False),
                 tab, focus, index, steps, tokens, fingerprint("collapse-cosine-fingerprint"))(cb.collapse_cosine)
    app.callback(*_view_outputs("grokking", TAB_GRAPHS["grokking"], "grokking-fingerprint"),
                 tab, runs, tokens, fingerprint("grokking-fingerprint"))(cb.grokking)
    app.callback(*_view_outputs("dynamics", TAB_GRAPHS["dynamics"], "dynamics-fingerprint"),
                 tab, runs, tokens, fingerprint("dynamics-fingerprint"))(cb.dynamics)

    app.callback(*_view_outputs("weights", ["weights-heatmap", "weights-alpha"], "weights-fingerprint"),
                 tab, runs, focus, tokens, fingerprint("weights-fingerprint"))(cb.weights)
    app.callback(*_view_outputs("weights", ["weights-esd"], "weights-esd-fingerprint", with_notice=False),
                 tab, focus, index, steps, Input("weights-layer", "value"), tokens,
                 fingerprint("weights-esd-fingerprint"))(cb.weights_esd)
    app.callback(Output("weights-layer", "options"), Output("weights-layer", "value"),
                 focus, tokens, State("weights-layer", "value"))(cb.weights_layer_options)

    register_compare(app, CompareCallbacks(cb.catalog))
    for name in (t for t in TABS if t != "compare"):  # the Compare tab downloads its own grids
        def download(n_clicks: int | None, selected: list[str], focus_key: str | None, index_value: int | None,
                     steps_value: list[int], metric: str | None, plane: str | None, tokens_value: list,
                     _tab: str = name) -> dict[str, Any]:
            return cb.download(_tab, n_clicks, selected, focus_key, index_value, steps_value, metric, plane,
                               tokens_value)

        app.callback(Output(f"{name}-download", "data"), Input(f"{name}-download-button", "n_clicks"),
                     State("runs", "value"), State("focus", "value"), State("checkpoint", "value"),
                     State("checkpoint-steps", "data"), State("surface-metric", "value"),
                     State("surface-plane", "value"), State("tokens", "data"),
                     prevent_initial_call=True)(download)
