"""The page: header, run and checkpoint controls, one summary card per run, and a tab per probe family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dash import dcc, html

from dashboard.data import Catalog
from dashboard.figures._style import compact_step
from dashboard.views import TAB_LABELS, TABS

POLL_MS = 2000          # how often the page asks the stores whether they changed
MAX_INITIAL_RUNS = 4    # runs selected when the page opens
MAX_SLIDER_MARKS = 8

# Graph ids per tab, in page order; per-checkpoint graphs follow the checkpoint slider.
TAB_GRAPHS = {
    "overview": ["overview-curves"],
    "landscape": ["landscape-surface", "landscape-trajectory", "landscape-slice"],
    "hessian": ["hessian-eigenvalues", "hessian-trace", "hessian-density", "hessian-spectrogram",
                "hessian-preconditioned"],
    "sharpness": ["sharpness-measures"],
    "collapse": ["collapse-measures", "collapse-cosine"],
    "grokking": ["grokking-diagnostics"],
    "weights": ["weights-esd", "weights-heatmap", "weights-alpha"],
    "dynamics": ["dynamics-noise", "dynamics-connectivity"],
    "compare": ["compare-surface", "compare-density"],
}
# Views that follow the checkpoint slider inside a tab, redrawn on their own.
_EXTRA_VIEWS = {"landscape": ("landscape-trajectory",), "hessian": ("hessian-density", "hessian-preconditioned"),
                "collapse": ("collapse-cosine",), "weights": ("weights-esd",)}
_TAB_HELP = {
    "overview": "Loss and accuracy over training steps, from the training monitor and the metrics probe.",
    "landscape": "The loss surface around the selected checkpoint (along the slice directions d₁, d₂, random and "
                 "filter-normalized by default) or in the PCA plane of the training trajectory, and for every "
                 "selected run the 1-D slice through the checkpoint or the interpolation from its first "
                 "checkpoint; below it the training path on the PCA plane (▶ Play adds it checkpoint by checkpoint).",
    "hessian": "Top Hessian eigenvalues against the 2/η edge of stability, the trace, and the spectral density "
               "(at the selected checkpoint, and over training for the focus run); for adaptive optimizers, when "
               "their state was recorded, the preconditioned sharpness λmax(P⁻¹H) against its threshold (38/η "
               "for Adam).",
    "sharpness": "Worst-case, average-case and first-order sharpness measures over training.",
    "collapse": "Neural-collapse measures NC1–NC4 (log scale; smaller is more collapsed) and the class-mean "
                "cosine matrix at the selected checkpoint.",
    "grokking": "Train/test accuracy and loss, Softmax Collapse, NLM alignment and norms. Dashed lines: grokking "
                "onset (test accuracy ≥ 95% of its best); dotted: SC onset (SC fraction > 1%).",
    "weights": "Weight-matrix spectra (no data needed): the selected layer's eigenvalue density on log-log axes with "
               "its power-law fit p(λ) ∝ λ^−α and the Marchenko–Pastur bulk, the per-layer α over training, and "
               "the model-level α (2–4: well-trained layers; above 6: close to random).",
    "dynamics": "The gradient noise scale B_simple = tr Σ/|G|² and B_noise = tr(HΣ)/GᵀHG over training (the "
                "critical batch size), and mode connectivity: the loss along a trained curve between two models "
                "against the straight line, before and after permutation alignment.",
    "compare": "Two runs, or two checkpoints of one run, side by side on one colour scale, with their difference "
               "B − A: the loss surfaces along each checkpoint's directions d₁, d₂, and the Hessian spectral "
               "densities.",
}


def graph_config(graph_id: str) -> dict[str, Any]:
    """Plotly toolbar settings: PNG download at twice the screen resolution, no logo."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": graph_id, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    }


def _graph(graph_id: str, *, height: int = 420) -> dcc.Graph:
    return dcc.Graph(id=graph_id, config=graph_config(graph_id), style={"minHeight": f"{height}px"},
                     className="graph")


def slider_marks(steps: Sequence[int]) -> dict[int, str]:
    """At most ``MAX_SLIDER_MARKS`` evenly spaced marks (slider positions are checkpoint indices), so the
    labels stay readable at hundreds of checkpoints; the first and last are always marked. Labels are short
    (``19.9k``) unless two of them would read the same (``10k`` for 10,000 and 10,020): then all are exact."""
    n = len(steps)
    if n == 0:
        return {}
    count = min(n, MAX_SLIDER_MARKS)
    indices = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
    labels = [compact_step(int(steps[i])) for i in indices]
    if len(set(labels)) < len(labels):
        labels = [f"{int(steps[i]):,}" for i in indices]
    return {int(i): label for i, label in zip(indices, labels)}


def _tab(tab: str) -> dcc.Tab:
    graphs = TAB_GRAPHS[tab]
    header = html.Div(className="tab-header", children=[
        html.P(_TAB_HELP[tab], className="tab-help"),
        html.Div(className="tab-actions", children=[
            html.Button("Download CSV", id=f"{tab}-download-button", className="button", n_clicks=0),
            dcc.Download(id=f"{tab}-download"),
        ]),
    ])
    controls: list[Any] = []
    if tab == "landscape":
        controls = [html.Div(className="control-row", children=[
            html.Div(className="control", children=[
                html.Label("Surface of", htmlFor="surface-metric"),
                dcc.RadioItems(id="surface-metric", value="loss", inline=True, className="radio", options=[
                    {"label": "train loss", "value": "loss"}, {"label": "train accuracy", "value": "accuracy"},
                    {"label": "test loss", "value": "test_loss"}, {"label": "test accuracy", "value": "test_accuracy"},
                ]),
            ]),
            html.Div(className="control", children=[
                html.Label("Plane", htmlFor="surface-plane"),
                dcc.RadioItems(id="surface-plane", value="random", inline=True, className="radio", options=[
                    {"label": "directions d₁, d₂ at the checkpoint", "value": "random"},
                    {"label": "PCA of the trajectory", "value": "pca"},
                ]),
            ]),
            html.Div(className="control", children=[
                html.Label("Line", htmlFor="slice-line"),
                dcc.RadioItems(id="slice-line", value="slice", inline=True, className="radio", options=[
                    {"label": "slice along d₁", "value": "slice"},
                    {"label": "interpolation from the first checkpoint", "value": "interpolation"},
                ]),
            ]),
        ])]
    if tab == "weights":
        controls = [html.Div(className="control-row", children=[
            html.Div(className="control", children=[
                html.Label("Layer (ESD)", htmlFor="weights-layer"),
                dcc.Dropdown(id="weights-layer", options=[], value=None, clearable=False,
                             placeholder="first layer with a fit"),
            ]),
        ])]
    if tab == "compare":
        from dashboard import compare  # it builds on this module

        controls = compare.controls()
    if tab == "hessian":
        body = [html.Div(className="grid-2", children=[_graph(g) for g in graphs[:2]]),
                html.Div(className="grid-2", children=[_graph(g) for g in graphs[2:4]]),
                html.Div(id="hessian-preconditioned-box", style={"display": "none"},
                         children=[_graph("hessian-preconditioned")])]
    elif tab == "dynamics":
        body = [html.Div(className="grid-2", children=[_graph(g) for g in graphs])]
    elif tab == "weights":
        body = [html.Div(className="grid-2", children=[_graph(g, height=440) for g in graphs[:2]]), _graph(graphs[2])]
    elif tab == "landscape":
        body = [_graph(graphs[0], height=540), _graph(graphs[1], height=560), _graph(graphs[2])]
    else:
        body = [_graph(g) for g in graphs]
    return dcc.Tab(label=TAB_LABELS[tab], value=tab, className="tab", selected_className="tab--selected",
                   children=html.Div(className="tab-body", children=[
                       header, *controls,
                       html.Div(id=f"{tab}-notice", className="notice", style={"display": "none"}),
                       html.Div(id=f"{tab}-content", children=body),
                       dcc.Store(id=f"{tab}-fingerprint"),
                       *[dcc.Store(id=f"{name}-fingerprint") for name in _EXTRA_VIEWS.get(tab, ())],
                   ]))


def header(catalog: Catalog) -> html.Header:
    stores = ", ".join(str(p) for p in catalog.paths)
    return html.Header(className="header", children=[
        html.Div(className="brand", children=[
            html.Span("landscape", className="brand-name"),
            html.Span("loss landscapes & training dynamics", className="brand-tagline"),
        ]),
        html.Div(className="header-right", children=[
            html.Span(stores, className="store-paths", title=stores),
            html.Span(id="live-status", className="live", children="● live"),
        ]),
    ])


def controls(run_options: list[dict], selected: list[str], focus: str | None, steps: list[int]) -> html.Section:
    return html.Section(className="controls card", children=[
        html.Div(className="control control--runs", children=[
            html.Label("Runs (overlaid)", htmlFor="runs"),
            dcc.Dropdown(id="runs", options=run_options, value=selected, multi=True, clearable=True,
                         placeholder="Select runs…"),
        ]),
        html.Div(className="control control--focus", children=[
            html.Label("Focus run (per-checkpoint views)", htmlFor="focus"),
            dcc.Dropdown(id="focus", options=[{"label": k, "value": k} for k in selected], value=focus,
                         clearable=False, placeholder="Select a run…"),
        ]),
        html.Div(className="control control--slider", children=[
            html.Div(className="slider-label", children=[
                html.Label("Checkpoint", htmlFor="checkpoint"),
                html.Span(id="checkpoint-label", className="checkpoint-label", children=checkpoint_label(steps, None)),
            ]),
            dcc.Slider(id="checkpoint", min=0, max=max(len(steps) - 1, 0), step=1,
                       value=max(len(steps) - 1, 0), marks=slider_marks(steps), included=False,
                       allow_direct_input=False, updatemode="mouseup", disabled=not steps),
            dcc.Store(id="checkpoint-steps", data=steps),
        ]),
    ])


def checkpoint_label(steps: Sequence[int], index: int | None) -> str:
    if not steps:
        return "no checkpoints yet"
    i = len(steps) - 1 if index is None else max(0, min(int(index), len(steps) - 1))
    return f"step {steps[i]:,} · {i + 1} of {len(steps)}"


def _fmt(key: str, value: float) -> str:
    if "accuracy" in key or key == "sc_fraction":
        return f"{value:.1%}"
    return f"{value:.4g}"


_CARD_LABELS = {"train_loss": "train loss", "test_loss": "test loss", "train_accuracy": "train acc.",
                "test_accuracy": "test acc.", "lambda_max": "λmax", "trace": "tr(H)", "nc1": "NC1",
                "sc_fraction": "SC fraction", "worst_case": "sharpness"}


def summary_cards(summaries: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> list[html.Div]:
    """One card per run: checkpoints, probes present, last values of key scalars, errors."""
    if not summaries:
        return [html.Div("No runs selected.", className="summary-empty")]
    cards = []
    for s in summaries:
        steps = (f"{s['checkpoints']} checkpoint{'s' if s['checkpoints'] != 1 else ''}, steps "
                 f"{s['first_step']:,}–{s['last_step']:,}" if s["checkpoints"] else "no checkpoints analysed yet")
        if s.get("monitor_last_step") is not None:
            steps += f" · monitor to step {s['monitor_last_step']:,}"
        problems = s["errors"] + s["invalid"]
        badge_text = ("no errors" if not problems else
                      f"{s['errors']} error{'s' if s['errors'] != 1 else ''}"
                      + (f", {s['invalid']} invalid" if s["invalid"] else ""))
        values = [html.Div(className="kv", children=[
            html.Span(_CARD_LABELS.get(k, k), className="kv-key"),
            html.Span(_fmt(k, v), className="kv-value", title=f"at step {step:,}"),
        ]) for k, (v, step) in s["last"].items()]
        subtitle = " · ".join(x for x in (s.get("label"), f"η = {s['lr']:g}" if isinstance(s.get("lr"), (int, float))
                                          else None) if x)
        cards.append(html.Div(className="summary-card", style={"borderTopColor": colors.get(s["key"], "#999")},
                              **{"data-run": s["key"]}, children=[
            html.Div(className="summary-title", children=[
                html.Span(className="swatch", style={"backgroundColor": colors.get(s["key"], "#999")}),
                html.Span(s["key"], className="summary-run", title=s["store"]),
                html.Span(badge_text, className="badge " + ("badge--bad" if problems else "badge--ok")),
            ]),
            html.Div(subtitle, className="summary-subtitle") if subtitle else None,
            html.Div(steps, className="summary-steps"),
            html.Div(className="chips", children=[html.Span(f"{p} ({n})", className="chip")
                                                   for p, n in s["probes"].items()]),
            html.Div(className="kvs", children=values),
        ]))
    return cards


def page(catalog: Catalog) -> html.Div:
    """The whole page for the stores as they are now (built on each page load)."""
    tokens = catalog.tokens()
    refs = catalog.runs(tokens)
    options = [{"label": r.key, "value": r.key} for r in refs]
    selected = [r.key for r in refs[:MAX_INITIAL_RUNS]]
    focus = selected[0] if selected else None
    steps = catalog.steps(refs[0], None, tokens) if refs else []
    return html.Div(className="page", children=[
        header(catalog),
        html.Main(className="main", children=[
            controls(options, selected, focus, steps),
            html.Section(id="summary", className="summary"),
            dcc.Tabs(id="tabs", value="overview", className="tabs", parent_className="tabs-parent",
                     children=[_tab(t) for t in TABS]),
        ]),
        dcc.Store(id="tokens", data=tokens),
        dcc.Interval(id="poll", interval=POLL_MS, n_intervals=0),
        html.Footer(className="footer", children=[
            "Figures: camera icon in each graph's toolbar saves a PNG; “Download CSV” saves the tab's data. ",
            "The page checks the stores for new results every 2 s.",
        ]),
    ])
