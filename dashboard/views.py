"""What each tab shows: stored data of the selected runs turned into figures, with a notice for what is missing.

Each function reads only what its view shows, through the cached :class:`dashboard.data.Catalog`, and
returns a :class:`View`. Its ``fingerprint`` names exactly the data behind it, so the page redraws a view
only when that fingerprint changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import figures
from dashboard.data import MONITOR, Catalog, RunRef, Tokens

TABS = ("overview", "landscape", "hessian", "sharpness", "collapse", "grokking", "weights", "dynamics", "compare")
TAB_LABELS = {"overview": "Overview", "landscape": "Landscape", "hessian": "Hessian", "sharpness": "Sharpness",
              "collapse": "Collapse", "grokking": "Grokking", "weights": "Weights", "dynamics": "Dynamics",
              "compare": "Compare"}
# The probes whose scalars each tab plots (and exports as CSV).
TAB_PROBES = {"overview": ("metrics", MONITOR), "landscape": ("slices",), "hessian": ("hessian",),
              "sharpness": ("sharpness",), "collapse": ("collapse",), "grokking": ("grokking", MONITOR, "metrics"),
              "weights": ("weights",), "dynamics": ("noise", "connectivity"), "compare": ("slices", "hessian")}

_SURFACE_KEYS = ("loss", "accuracy", "test_loss", "test_accuracy")
_SLICE_KEYS = ["line_x", "line_loss", "line_accuracy", "line_test_loss", "line_test_accuracy",
               "x", "y", "loss", "accuracy", "test_loss", "test_accuracy"]
_INTERP_KEYS = ["interp_x", "interp_loss", "interp_accuracy", "interp_test_loss", "interp_test_accuracy",
                "interp_from_step"]
_PATH_KEYS = ["path_x", "path_y", "path_steps", "explained_variance"]
_ESD_KEYS = ["layer_names", "messages", "alpha", "alpha_stderr", "xmin", "n_tail", "n_evals", "mp_scale", "mp_ratio",
             "mp_threshold", "n_spikes", "esd_log10_edges", "esd_counts"]


@dataclass
class View:
    """The figures of one view, a notice (or None), whether any data exist, and the data's fingerprint."""

    figures: list[go.Figure]
    notice: str | None = None
    has_data: bool = True
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)


def how_to_get(probe: str) -> str:
    return f"run `landscape analyze --probes {probe}`"


def missing_notice(probe: str, missing: Sequence[str], total: int, *, hint: str | None = None) -> str | None:
    """The sentence a view shows when some or all selected runs have no ``probe`` results."""
    if not missing:
        return None
    hint = hint or how_to_get(probe)
    if len(missing) == total:
        where = "this run" if total == 1 else "these runs"
        return f"No {probe} results in {where} yet — {hint}."
    return f"No {probe} results yet for {', '.join(missing)} — {hint}."


def _fp(catalog: Catalog, refs: Sequence[RunRef], probes: Sequence[str], tokens: Tokens | None, *args: object) -> str:
    parts = [repr(args), "runs=" + ",".join(r.key for r in catalog.runs(tokens))] + [f"{r.key}:{p}:{catalog.fingerprint(r, p, tokens)}" for r in refs for p in probes]
    return "|".join(parts)


def colors(catalog: Catalog, tokens: Tokens | None) -> dict[str, str]:
    """One colour per run over every open store, stable as runs are added."""
    return figures.run_colors([r.key for r in catalog.runs(tokens)])


def _no_runs_view(n: int = 1) -> View:
    message = "Select one or more runs above."
    return View([figures.empty_figure(message) for _ in range(n)], notice=message, has_data=False,
                fingerprint="no-runs")


def _graph_uirevision(fig: go.Figure, name: str) -> go.Figure:
    # Keep the user's zoom, legend toggles and 3D camera across live updates and slider moves.
    fig.update_layout(uirevision=name)
    return fig


# -- overview ---------------------------------------------------------------------------------------
def _over_steps(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], previous: str | None, tab: str,
                draw: Callable[..., go.Figure], *, present: Sequence[str], notice_probe: str,
                hint: str | None = None) -> View | None:
    """A tab that plots the stored scalars of ``TAB_PROBES[tab]`` over steps for the selected runs; a run
    counts as missing when it has none of the ``present`` probes."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return _no_runs_view()
    probes = TAB_PROBES[tab]
    fingerprint = _fp(catalog, refs, probes, tokens, tab)
    if fingerprint == previous:
        return None
    missing = [r.key for r in refs if not any(catalog.has(r, p, tokens) for p in present)]
    notice = missing_notice(notice_probe, missing, len(refs), hint=hint)
    fig = draw(catalog.scalars(refs, probes, tokens), colors=colors(catalog, tokens))
    return View([_graph_uirevision(fig, tab)], notice, len(missing) < len(refs), fingerprint)


_MONITOR_HINT = "run `landscape analyze --probes {}`, or train with the Monitor callback"


def overview(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], previous: str | None = None) -> View | None:
    """Loss and accuracy over steps of the selected runs (training monitor and/or the metrics probe)."""
    return _over_steps(catalog, tokens, keys, previous, "overview", figures.training_curves_figure,
                       present=TAB_PROBES["overview"], notice_probe="metrics", hint=_MONITOR_HINT.format("metrics"))


# -- landscape --------------------------------------------------------------------------------------
def surface(catalog: Catalog, tokens: Tokens | None, focus: str | None, step: int | None,
            metric: str = "loss", plane: str = "random", previous: str | None = None) -> View | None:
    """The 2-D surface of the focus run at the checkpoint nearest ``step`` (or the PCA plane + trajectory)."""
    ref = catalog.ref(focus, tokens) if focus else None
    if ref is None:
        return _no_runs_view()
    if not catalog.has(ref, "slices", tokens):
        notice = missing_notice("slices", [ref.key], 1)
        return View([figures.empty_figure(notice)], notice, False, _fp(catalog, [ref], ["slices"], tokens))
    notice = None
    steps = catalog.steps(ref, "slices", tokens)
    if plane == "pca":
        # The PCA plane is stored with the last checkpoint's result, once a run has three checkpoints.
        last = steps[-1]
        arrays = catalog.arrays(ref, "slices", last, tokens, keys=["pca_x"])
        if "pca_x" in arrays:
            fingerprint = _fp(catalog, [ref], ["slices"], tokens, "pca", metric, step)
            if fingerprint == previous:
                return None
            arrays = catalog.arrays(ref, "slices", last, tokens,
                                    keys=["pca_x", "pca_y", f"pca_{metric}", *_PATH_KEYS])
            title = f"{ref.key} — PCA plane of the trajectory (computed at step {last:,})"
            fig = figures.surface_figure(arrays, metric=metric, plane="pca", highlight_step=step, title=title)
            return View([_graph_uirevision(fig, f"surface-pca-{ref.key}-{metric}")], None, True, fingerprint)
        notice = ("No PCA plane in this run yet (it is stored with the last checkpoint once a run has at least "
                  "three) — showing the plane at the checkpoint.")
    shown = catalog.nearest_step(ref, "slices", step, tokens)
    fingerprint = _fp(catalog, [ref], ["slices"], tokens, "random", metric, shown, notice)
    if fingerprint == previous:
        return None
    arrays = catalog.arrays(ref, "slices", shown, tokens, keys=["x", "y", metric])
    title = f"{ref.key} — plane of directions d₁, d₂ at step {shown:,}"
    if step is not None and shown != step:
        title += f" (nearest to {int(step):,})"
    fig = figures.surface_figure(arrays, metric=metric, plane="random", title=title)
    return View([_graph_uirevision(fig, f"surface-{ref.key}-{metric}")], notice, True, fingerprint)


def pca_step(catalog: Catalog, ref: RunRef, tokens: Tokens | None) -> int | None:
    """The step whose ``slices`` result holds the run's PCA plane and path (its last checkpoint), or None."""
    steps = catalog.steps(ref, "slices", tokens)
    if not steps or "pca_x" not in catalog.arrays(ref, "slices", steps[-1], tokens, keys=["pca_x"]):
        return None
    return steps[-1]


def trajectory(catalog: Catalog, tokens: Tokens | None, focus: str | None, metric: str = "loss",
               previous: str | None = None, *, max_frames: int = figures.trajectory.MAX_FRAMES) -> View | None:
    """The focus run's training path added checkpoint by checkpoint over the PCA plane (an animation)."""
    ref = catalog.ref(focus, tokens) if focus else None
    if ref is None:
        return _no_runs_view()
    fingerprint = _fp(catalog, [ref], ["slices"], tokens, "trajectory", metric)
    if fingerprint == previous:
        return None
    last = pca_step(catalog, ref, tokens)
    if last is None:
        notice = ("No trajectory yet: the slices probe stores the PCA plane and the path with the last checkpoint "
                  "once a run has at least three.")
        return View([figures.empty_figure(notice, title="Training path on the PCA plane")], notice, False, fingerprint)
    arrays = catalog.arrays(ref, "slices", last, tokens, keys=["pca_x", "pca_y", f"pca_{metric}", *_PATH_KEYS])
    title = f"{ref.key} — training path on the PCA plane (computed at step {last:,}); ▶ Play adds it step by step"
    fig = figures.trajectory_animation_figure(arrays, metric=metric, title=title, max_frames=max_frames)
    return View([_graph_uirevision(fig, f"trajectory-{ref.key}-{metric}")], None, len(fig.data) > 0, fingerprint)


def slices_1d(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], step: int | None,
              previous: str | None = None, line: str = "slice") -> View | None:
    """The 1-D line of every selected run at its checkpoint nearest ``step``, overlaid: the slice along d₁
    through the checkpoint (``line="slice"``) or the interpolation from the run's first checkpoint
    (``line="interpolation"``)."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return _no_runs_view()
    nearest_steps = {ref: catalog.nearest_step(ref, "slices", step, tokens) for ref in refs}
    fingerprint = _fp(catalog, refs, ["slices"], tokens, line, tuple(nearest_steps.values()))
    if fingerprint == previous:
        return None
    interpolation = line == "interpolation"
    curves, palette = {}, colors(catalog, tokens)
    for ref, nearest in nearest_steps.items():
        if nearest is None:
            continue
        if interpolation:
            arrays = catalog.arrays(ref, "slices", nearest, tokens, keys=_INTERP_KEYS)
            found = figures.interpolation_curves(arrays)
            start = arrays.get("interp_from_step")
            name = f"{ref.key} {int(start[0]):,} → {nearest:,}" if found and start is not None else ""
        else:
            found = figures.slice_curves(catalog.arrays(ref, "slices", nearest, tokens, keys=_SLICE_KEYS))
            name = f"{ref.key} @ {nearest:,}"
        if found:
            curves[name] = found
            palette[name] = palette[ref.key]
    if interpolation:
        fig = figures.slice_figure(curves, colors=palette, title="Interpolation from the first checkpoint (x = 0) "
                                   "to the selected one (x = 1)", x_title="interpolation coefficient (x)")
        if not curves:
            fig = figures.empty_figure("No interpolation at this checkpoint: the slices probe stores one at every "
                                       "checkpoint after a run's first.", title="Interpolation")
    else:
        fig = figures.slice_figure(curves, colors=palette, title="1-D slice through the checkpoint")
    return View([_graph_uirevision(fig, f"slice-1d-{line}")], None, bool(curves), fingerprint)


# -- hessian ----------------------------------------------------------------------------------------
def hessian(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], focus: str | None,
            previous: str | None = None) -> View | None:
    """Top-k eigenvalues (with 2/η), trace ± stderr for the selected runs; the spectrogram of the focus run."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return _no_runs_view(3)
    fingerprint = _fp(catalog, refs, ["hessian"], tokens, "hessian", focus)
    if fingerprint == previous:
        return None
    missing = [r.key for r in refs if not catalog.has(r, "hessian", tokens)]
    notice = missing_notice("hessian", missing, len(refs))
    palette = colors(catalog, tokens)
    frame = catalog.scalars(refs, ["hessian"], tokens)
    lrs = {r.key: catalog.lr(r, tokens) for r in refs}
    eig = figures.hessian_eigenvalues_figure(frame, lr=lrs, colors=palette)
    trace = figures.hessian_trace_figure(frame, colors=palette)
    ref = catalog.ref(focus, tokens) if focus else None
    if ref is None or not catalog.has(ref, "hessian", tokens):
        ref = next((r for r in refs if catalog.has(r, "hessian", tokens)), None)
    if ref is not None:
        densities = {s: catalog.arrays(ref, "hessian", s, tokens, keys=["density_grid", "density_curve"])
                     for s in catalog.steps(ref, "hessian", tokens)}
        spectrogram = figures.spectrogram_figure(densities, run=ref.key)
    else:
        spectrogram = figures.empty_figure("No spectral densities recorded.")
    figs = [_graph_uirevision(eig, "hessian-eig"), _graph_uirevision(trace, "hessian-trace"),
            _graph_uirevision(spectrogram, f"spectrogram-{ref.key if ref else ''}")]
    return View(figs, notice, len(missing) < len(refs), fingerprint)


def preconditioned(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str],
                   previous: str | None = None) -> View | None:
    """λmax(P⁻¹H) against the optimizer's threshold for the selected runs (stored by the sharpness probe when
    optimizer state was available); ``has_data`` says whether any run has it, so the tab can hide the graph."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return View([figures.empty_figure("Select one or more runs above.")], None, False, "no-runs")
    fingerprint = _fp(catalog, refs, ["sharpness"], tokens, "preconditioned")
    if fingerprint == previous:
        return None
    frame = catalog.scalars(refs, ["sharpness"], tokens)
    present = bool(len(frame)) and bool((frame["key"] == "lambda_max_preconditioned").any())
    fig = figures.preconditioned_sharpness_figure(frame, colors=colors(catalog, tokens))
    return View([_graph_uirevision(fig, "hessian-preconditioned")], None, present, fingerprint)


def density(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], step: int | None,
            previous: str | None = None) -> View | None:
    """The spectral density of every selected run at its checkpoint nearest ``step``, overlaid."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return _no_runs_view()
    nearest_steps = {ref: catalog.nearest_step(ref, "hessian", step, tokens) for ref in refs}
    fingerprint = _fp(catalog, refs, ["hessian"], tokens, "density", tuple(nearest_steps.values()))
    if fingerprint == previous:
        return None
    found, palette = {}, colors(catalog, tokens)
    for ref, nearest in nearest_steps.items():
        if nearest is None:
            continue
        arrays = catalog.arrays(ref, "hessian", nearest, tokens, keys=["density_grid", "density_curve"])
        if arrays:
            name = f"{ref.key} @ {nearest:,}"
            found[name] = arrays
            palette[name] = palette[ref.key]
    fig = figures.spectral_density_figure(found, colors=palette, title="Spectral density at the checkpoint")
    return View([_graph_uirevision(fig, "density")], None, bool(found), fingerprint)


# -- sharpness, collapse, grokking -----------------------------------------------------------------
def sharpness(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], previous: str | None = None) -> View | None:
    """Sharpness measures over steps of the selected runs."""
    return _over_steps(catalog, tokens, keys, previous, "sharpness", figures.sharpness_figure,
                       present=["sharpness"], notice_probe="sharpness")


def collapse(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], previous: str | None = None) -> View | None:
    """Neural-collapse measures NC1–NC4 over steps of the selected runs."""
    return _over_steps(catalog, tokens, keys, previous, "collapse", figures.collapse_figure,
                       present=["collapse"], notice_probe="collapse")


def cosine(catalog: Catalog, tokens: Tokens | None, focus: str | None, step: int | None,
           previous: str | None = None) -> View | None:
    """The class-mean (and classifier) cosine matrices of the focus run at the checkpoint nearest ``step``."""
    ref = catalog.ref(focus, tokens) if focus else None
    if ref is None:
        return _no_runs_view()
    shown = catalog.nearest_step(ref, "collapse", step, tokens)
    if shown is None:
        return View([figures.empty_figure("No collapse results in this run yet.")], None, False, "cosine-none")
    fingerprint = _fp(catalog, [ref], ["collapse"], tokens, "cosine", shown)
    if fingerprint == previous:
        return None
    arrays = catalog.arrays(ref, "collapse", shown, tokens, keys=["cosine_means", "cosine_weights"])
    fig = figures.cosine_matrix_figure(arrays)
    n = np.asarray(arrays.get("cosine_means", np.zeros((0, 0)))).shape[0]
    etf = f"; simplex-ETF target −1/(C−1) = {-1.0 / (n - 1):.3f}" if n > 1 else ""
    fig.update_layout(title=f"{ref.key} — pairwise cosines at step {shown:,}{etf}")
    return View([_graph_uirevision(fig, f"cosine-{ref.key}")], None, bool(arrays), fingerprint)


def grokking(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], previous: str | None = None) -> View | None:
    """Grokking diagnostics of the selected runs (grokking probe and/or training monitor)."""
    return _over_steps(catalog, tokens, keys, previous, "grokking", figures.grokking_figure,
                       present=["grokking", MONITOR], notice_probe="grokking", hint=_MONITOR_HINT.format("grokking"))


_DYNAMICS_HINT = ("run `landscape analyze --probes noise`, or store a mode-connectivity result with "
                  "`store.write_result(run, step, \"connectivity\", probes.connectivity.bezier_curve(...).to_result())`")


def dynamics(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], previous: str | None = None) -> View | None:
    """The gradient noise scale over steps and, for each selected run, its latest connectivity record (the
    loss along the trained curve, the straight line and the aligned line)."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return _no_runs_view(2)
    probes = TAB_PROBES["dynamics"]
    fingerprint = _fp(catalog, refs, probes, tokens, "dynamics")
    if fingerprint == previous:
        return None
    missing = [r.key for r in refs if not any(catalog.has(r, p, tokens) for p in probes)]
    notice = missing_notice("noise or connectivity", missing, len(refs), hint=_DYNAMICS_HINT)
    palette = colors(catalog, tokens)
    noise = figures.noise_scale_figure(catalog.scalars(refs, ["noise"], tokens), colors=palette)
    curves = {}
    for ref in refs:
        steps = catalog.steps(ref, "connectivity", tokens)
        if steps:
            name = ref.key if len(steps) == 1 else f"{ref.key} @ {steps[-1]:,}"
            curves[name] = catalog.arrays(ref, "connectivity", steps[-1], tokens)
            palette[name] = palette[ref.key]
    connectivity = figures.connectivity_figure(curves, colors=palette)
    return View([_graph_uirevision(noise, "dynamics-noise"), _graph_uirevision(connectivity, "dynamics-connectivity")],
                notice, len(missing) < len(refs), fingerprint)


# -- weights ----------------------------------------------------------------------------------------
def weight_layers(catalog: Catalog, tokens: Tokens | None, focus: str | None) -> list[str]:
    """The weight matrices (row names, in model order) of the focus run's newest ``weights`` result."""
    ref = catalog.ref(focus, tokens) if focus else None
    steps = catalog.steps(ref, "weights", tokens) if ref is not None else []
    if not steps:
        return []
    names = catalog.arrays(ref, "weights", steps[-1], tokens, keys=["layer_names"]).get("layer_names")
    return [] if names is None else [str(n) for n in np.asarray(names).ravel()]


def weights(catalog: Catalog, tokens: Tokens | None, keys: Sequence[str], focus: str | None,
            previous: str | None = None) -> View | None:
    """The layer × step alpha heat map of the focus run and the model-level alphas of the selected runs."""
    refs = catalog.refs(keys, tokens)
    if not refs:
        return _no_runs_view(2)
    fingerprint = _fp(catalog, refs, ["weights"], tokens, "weights", focus)
    if fingerprint == previous:
        return None
    missing = [r.key for r in refs if not catalog.has(r, "weights", tokens)]
    notice = missing_notice("weights", missing, len(refs))
    frame = catalog.scalars(refs, ["weights"], tokens)
    ref = catalog.ref(focus, tokens) if focus else None
    if ref is None or not catalog.has(ref, "weights", tokens):
        ref = next((r for r in refs if catalog.has(r, "weights", tokens)), None)
    if ref is not None:
        heat = figures.weights_alpha_heatmap_figure(frame, run=ref.key, layers=weight_layers(catalog, tokens, ref.key))
    else:
        heat = figures.empty_figure("No per-layer alpha recorded.")
    trend = figures.weights_alpha_figure(frame, colors=colors(catalog, tokens))
    figs = [_graph_uirevision(heat, f"weights-heatmap-{ref.key if ref else ''}"),
            _graph_uirevision(trend, "weights-alpha")]
    return View(figs, notice, len(missing) < len(refs), fingerprint)


def weights_esd(catalog: Catalog, tokens: Tokens | None, focus: str | None, step: int | None, layer: str | None,
                previous: str | None = None) -> View | None:
    """The ESD of one layer of the focus run at the checkpoint nearest ``step``, with its fits."""
    ref = catalog.ref(focus, tokens) if focus else None
    if ref is None:
        return _no_runs_view()
    shown = catalog.nearest_step(ref, "weights", step, tokens)
    if shown is None:
        return View([figures.empty_figure("No weights results in this run yet.")], None, False, "weights-esd-none")
    fingerprint = _fp(catalog, [ref], ["weights"], tokens, "weights-esd", shown, layer)
    if fingerprint == previous:
        return None
    arrays = catalog.arrays(ref, "weights", shown, tokens, keys=_ESD_KEYS)
    index = figures.weights.layer_index(arrays, layer)
    name = str(np.asarray(arrays["layer_names"]).ravel()[index]) if index is not None else (layer or "")
    title = f"{ref.key} — ESD of {name} at step {shown:,}"
    if step is not None and shown != step:
        title += f" (nearest to {int(step):,})"
    fig = figures.weights_esd_figure(arrays, layer, title=title)
    return View([_graph_uirevision(fig, f"weights-esd-{ref.key}-{name}")], None, bool(arrays), fingerprint)


# -- CSV export -------------------------------------------------------------------------------------
def tab_csv(catalog: Catalog, tokens: Tokens | None, tab: str, keys: Sequence[str], focus: str | None = None,
            step: int | None = None, metric: str = "loss", plane: str = "random") -> tuple[pd.DataFrame, str]:
    """The data behind a tab as one table, and a file name: the tab's scalars (long form: run, step, probe,
    key, value), or for the landscape tab the grid of the surface shown (run, step, plane, x, y, metrics), followed
    by the interpolation from the first checkpoint when the surface is the checkpoint's own plane."""
    if tab not in TABS:
        raise ValueError(f"tab must be one of {', '.join(TABS)}, got {tab!r}.")
    if tab == "landscape":
        ref = catalog.ref(focus, tokens) if focus else None
        shown = catalog.nearest_step(ref, "slices", step, tokens) if ref is not None else None
        if ref is None or shown is None:
            return pd.DataFrame(columns=["run", "step", "plane", "x", "y"]), "landscape.csv"
        prefix = ""
        if plane == "pca":
            last = catalog.steps(ref, "slices", tokens)[-1]
            if "pca_x" in catalog.arrays(ref, "slices", last, tokens, keys=["pca_x"]):
                shown, prefix = last, "pca_"
        arrays = catalog.arrays(ref, "slices", shown, tokens)
        x, y = np.asarray(arrays[f"{prefix}x"]), np.asarray(arrays[f"{prefix}y"])
        xx, yy = np.meshgrid(x, y)
        table = {"run": ref.key, "step": shown, "plane": "pca" if prefix else "random",
                 "x": xx.ravel(), "y": yy.ravel()}
        for key in _SURFACE_KEYS:
            if f"{prefix}{key}" in arrays:
                table[key] = np.asarray(arrays[f"{prefix}{key}"], dtype=float).ravel()
        frame = pd.DataFrame(table)
        line = figures.interpolation_curves(arrays) if not prefix else {}
        if line:  # the interpolation from the first checkpoint: plane "interpolation", x the coefficient
            rows = {"run": ref.key, "step": shown, "plane": "interpolation", "x": line["x"], "y": np.nan,
                    **{k: v for k, v in line.items() if k in _SURFACE_KEYS}}
            frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
        return frame, f"landscape_{_safe(ref.key)}_step{shown}.csv"
    frame = catalog.scalars(catalog.refs(keys, tokens), TAB_PROBES[tab], tokens)
    return frame[["run", "step", "probe", "key", "value", "valid"]], f"{tab}.csv"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
