"""The dashboard app on synthetic stores: construction, callbacks called as plain functions, live updates."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import dash
import numpy as np
import pandas as pd
import pytest
from dash.exceptions import PreventUpdate
from synthetic_runs import write_run

from dashboard import create_app, serve
from dashboard.callbacks import notice_children, step_at
from dashboard.data import Catalog
from dashboard.layout import TAB_GRAPHS, slider_marks
from landscape.store import Store, StoreError
from probes.base import Result

RUNS = ["sgd", "adam"]


@pytest.fixture
def app(shared_store):
    application = create_app([shared_store])
    yield application
    application.catalog.close()


def first_view(app, tab: str = "overview", runs=RUNS, focus: str = "sgd", index: int | None = None):
    """Arguments the page sends for ``tab`` right after loading (slider on the last checkpoint)."""
    tokens = app.catalog.tokens()
    steps = app.catalog.steps(app.catalog.ref(focus, tokens), None, tokens)
    return tokens, steps, len(steps) - 1 if index is None else index


# -- construction -----------------------------------------------------------------------------------
def test_create_app_opens_the_stores_read_only_and_registers_every_view(app):
    assert isinstance(app, dash.Dash)
    assert app.catalog.stores[0].readonly
    with pytest.raises(StoreError, match="read-only"):
        app.catalog.stores[0].write_error("sgd", 0, "hessian", "nope")
    outputs = " ".join(app.callback_map)
    for graphs in TAB_GRAPHS.values():
        for graph in graphs:
            assert f"{graph}.figure" in outputs
    for tab in TAB_GRAPHS:
        assert f"{tab}-download.data" in outputs
    assert "tokens.data" in outputs and "checkpoint.value" in outputs


def test_page_layout_names_every_control(app):
    layout = str(app.layout())
    for component in ("runs", "focus", "checkpoint", "tabs", "poll", "tokens", "summary", "surface-metric"):
        assert f"id='{component}'" in layout or f'id="{component}"' in layout


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"store .*nope\.sqlite does not exist"):
        create_app([tmp_path / "nope.sqlite"])
    with pytest.raises(ValueError, match="at least one store"):
        create_app([])


def test_runs_of_several_stores_are_named_by_store_stem(shared_store, tmp_path):
    other = tmp_path / "other.sqlite"
    with Store(other) as store:
        write_run(store, "sgd", n_steps=3, grid=5, probes=("metrics",))
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    same_stem = copy_dir / "other.sqlite"
    same_stem.write_bytes(other.read_bytes())
    catalog = Catalog([shared_store, other, same_stem])
    try:
        keys = [r.key for r in catalog.runs()]
        assert keys == ["shared/sgd", "shared/adam", f"{tmp_path.name}-other/sgd", "copy-other/sgd"]
        frame = catalog.scalars([catalog.ref("copy-other/sgd")], ["metrics"])
        assert set(frame["run"]) == {"copy-other/sgd"}
    finally:
        catalog.close()


def test_serve_runs_the_app_on_the_given_address(shared_store, monkeypatch):
    calls = {}
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kwargs: calls.update(kwargs))
    serve([shared_store], host="127.0.0.1", port=8123)
    assert (calls["host"], calls["port"], calls["debug"]) == ("127.0.0.1", 8123, False)


def test_importing_the_dashboard_does_not_import_torch():
    code = "import sys, dashboard; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# -- first view and tabs ------------------------------------------------------------------------------
def test_overview_and_summary_render_on_first_view(app):
    tokens, steps, index = first_view(app)
    figure, notice, notice_style, content_style, fingerprint = app.callbacks.overview("overview", RUNS, tokens, None)
    assert {t.name for t in figure.data} == {"sgd · train", "sgd · test", "adam · train", "adam · test"}
    assert notice == [] and notice_style == {"display": "none"} and content_style == {}
    cards = app.callbacks.summary(RUNS, tokens)
    text = str(cards)
    assert len(cards) == 2
    assert "1 error" in text and "no errors" in text  # the first synthetic run records one error
    assert "5 checkpoints, steps 0–400" in text
    assert app.callbacks.checkpoint_text(index, steps) == "step 400 · 5 of 5"


def test_inactive_tabs_and_unchanged_data_do_not_redraw(app):
    tokens, steps, index = first_view(app)
    with pytest.raises(PreventUpdate):
        app.callbacks.hessian("overview", RUNS, "sgd", tokens, None)
    *_, fingerprint = app.callbacks.overview("overview", RUNS, tokens, None)
    with pytest.raises(PreventUpdate):
        app.callbacks.overview("overview", RUNS, tokens, fingerprint)
    with pytest.raises(PreventUpdate):
        app.callbacks.poll(3, tokens)


@pytest.mark.parametrize("tab, graphs", [
    ("hessian", ["hessian-eigenvalues", "hessian-trace", "hessian-spectrogram"]),
    ("sharpness", ["sharpness-measures"]),
    ("collapse", ["collapse-measures"]),
    ("grokking", ["grokking-diagnostics"]),
    ("dynamics", ["dynamics-noise", "dynamics-connectivity"]),
    ("weights", ["weights-heatmap", "weights-alpha"]),
])
def test_every_tab_draws_figures_with_data(app, tab, graphs):
    tokens, steps, index = first_view(app)
    args = (tab, RUNS, "sgd", tokens, None) if tab in ("hessian", "weights") else (tab, RUNS, tokens, None)
    out = getattr(app.callbacks, tab)(*args)
    figures_out = out[:len(graphs)]
    assert all(len(f.data) > 0 for f in figures_out)
    assert out[len(graphs)] == []  # no notice


def test_hessian_line_at_two_over_lr_comes_from_run_metadata(app):
    tokens, _, _ = first_view(app)
    eig = app.callbacks.hessian("hessian", RUNS, "sgd", tokens, None)[0]
    edges = {t.name: t.y[0] for t in eig.data if "2/η" in t.name}
    assert edges == {"sgd · 2/η": pytest.approx(2 / 0.05), "adam · 2/η": pytest.approx(2 / 0.02)}


def test_slider_picks_the_surface_of_that_checkpoint(app):
    tokens, steps, last = first_view(app, "landscape")
    surface_last, slice_last, *_ = app.callbacks.landscape("landscape", RUNS, "sgd", last, steps, "loss", "random",
                                                           "slice", tokens, None)
    surface_first, slice_first, *_ = app.callbacks.landscape("landscape", RUNS, "sgd", 0, steps, "loss", "random",
                                                             "slice", tokens, None)
    ref = app.catalog.ref("sgd")
    expected = app.catalog.stores[0].arrays("sgd", steps[0], "slices")["loss"]
    np.testing.assert_array_equal(surface_first.data[0].z, expected)
    assert not np.array_equal(surface_first.data[0].z, surface_last.data[0].z)
    assert "step 0" in surface_first.layout.title.text
    assert [t.name for t in slice_first.data][0].startswith("sgd @ 0")
    assert app.catalog.nearest_step(ref, "slices", 149) == 100


def test_line_switches_to_the_interpolation_from_the_first_checkpoint(app):
    tokens, steps, last = first_view(app, "landscape")
    _, line, *_ = app.callbacks.landscape("landscape", RUNS, "sgd", last, steps, "loss", "random", "interpolation",
                                          tokens, None)
    final = steps[last]
    names = [t.name for t in line.data]
    assert f"sgd 0 → {final:,} · train loss" in names and f"adam 0 → {final:,} · test loss" in names
    stored = app.catalog.stores[0].arrays("sgd", final, "slices")
    trace = next(t for t in line.data if t.name == f"sgd 0 → {final:,} · train loss")
    np.testing.assert_array_equal(trace.x, stored["interp_x"])
    np.testing.assert_array_equal(trace.y, stored["interp_loss"])
    assert line.layout.xaxis.title.text == "interpolation coefficient (x)"
    # The first checkpoint has no interpolation: the figure says so.
    _, first, *_ = app.callbacks.landscape("landscape", RUNS, "sgd", 0, steps, "loss", "random", "interpolation",
                                           tokens, None)
    assert not first.data and "No interpolation at this checkpoint" in first.layout.annotations[0].text


def test_pca_plane_shows_the_trajectory_and_falls_back_when_missing(app, fresh_store):
    tokens, steps, last = first_view(app, "landscape")
    surface, _, notice, *_ = app.callbacks.landscape("landscape", RUNS, "sgd", 1, steps, "loss", "pca", "slice", tokens, None)
    assert [t.name for t in surface.data].count("trajectory") == 2
    assert "step 100" in [t.name for t in surface.data]  # the selected checkpoint is starred
    assert notice == []
    with Store(fresh_store) as store:  # a run with two checkpoints has no PCA plane
        write_run(store, "short", n_steps=2, grid=5, probes=("slices",))
    other = create_app([fresh_store])
    try:
        tokens = other.catalog.tokens()
        surface, _, notice, *_ = other.callbacks.landscape("landscape", ["short"], "short", 1, [0, 100], "loss", "pca",
                                                           "slice", tokens, None)
        assert "No PCA plane in this run yet" in "".join(str(n) for n in notice)
        assert surface.data[0].type == "surface"
    finally:
        other.catalog.close()


def test_per_checkpoint_views_of_hessian_and_collapse(app):
    tokens, steps, last = first_view(app)
    density, fingerprint = app.callbacks.hessian_density("hessian", RUNS, 2, steps, tokens, None)
    assert [t.name for t in density.data] == ["sgd @ 200", "adam @ 200"]
    assert density.layout.yaxis.type == "log"
    cosine, _ = app.callbacks.collapse_cosine("collapse", "sgd", 2, steps, tokens, None)
    expected = app.catalog.stores[0].arrays("sgd", 200, "collapse")["cosine_means"]
    np.testing.assert_array_equal(cosine.data[0].z, expected)
    assert "step 200" in cosine.layout.title.text


def test_hessian_tab_shows_the_preconditioned_sharpness_only_when_a_run_has_it(app):
    tokens, _, _ = first_view(app)
    figure, style, fingerprint = app.callbacks.hessian_preconditioned("hessian", RUNS, tokens, None)
    assert style == {} and [t.name for t in figure.data] == ["adam · λmax(P⁻¹H)", "adam · threshold", "adam · λmax(H)"]
    stored = app.catalog.stores[0].scalars(run="adam", probe="sharpness", keys=["preconditioned_threshold"])
    np.testing.assert_allclose(figure.data[1].y, stored.sort_values("step")["value"])
    with pytest.raises(PreventUpdate):
        app.callbacks.hessian_preconditioned("hessian", RUNS, tokens, fingerprint)
    _, hidden, _ = app.callbacks.hessian_preconditioned("hessian", ["sgd"], tokens, None)  # an SGD run: no P
    assert hidden == {"display": "none"}


def test_dynamics_tab_shows_noise_over_steps_and_the_latest_connectivity(app):
    tokens, _, _ = first_view(app)
    noise, connectivity, notice, *_ = app.callbacks.dynamics("dynamics", RUNS, tokens, None)
    assert {t.name for t in noise.data} == {"sgd · B_simple", "sgd · B_noise", "adam · B_simple", "adam · B_noise"}
    stored = app.catalog.stores[0].arrays("sgd", 400, "connectivity")
    curve = next(t for t in connectivity.data if t.name == "sgd · trained curve")
    np.testing.assert_array_equal(curve.y, stored["curve_loss"])
    assert notice == []
    cb = app.callbacks
    frame = _csv(cb.download("dynamics", 1, RUNS, "sgd", 0, [0], "loss", "random", tokens))
    assert set(frame["probe"]) == {"noise", "connectivity"}


def test_weights_tab_shows_the_chosen_layers_esd_and_its_alpha_over_layers_and_steps(app):
    tokens, steps, last = first_view(app, "weights")
    options, value = app.callbacks.weights_layer_options("sgd", tokens, None)
    assert [o["value"] for o in options] == ["fc1", "fc2", "fc3", "head"]
    assert app.callbacks.weights_layer_options("sgd", tokens, "fc2")[1] is dash.no_update  # the choice is kept
    esd, fingerprint = app.callbacks.weights_esd("weights", "sgd", 2, steps, "fc2", tokens, None)
    stored = app.catalog.stores[0].arrays("sgd", 200, "weights")
    assert esd.layout.title.text == "sgd — ESD of fc2 at step 200"
    assert f"power law α = {stored['alpha'][1]:.2f}" in [t.name for t in esd.data]
    with pytest.raises(PreventUpdate):  # same step and layer: no redraw
        app.callbacks.weights_esd("weights", "sgd", 2, steps, "fc2", tokens, fingerprint)
    head, _ = app.callbacks.weights_esd("weights", "sgd", 2, steps, "head", tokens, None)
    assert not any(t.name.startswith("power law") for t in head.data)  # too few eigenvalues for a fit
    heat, trend, *_ = app.callbacks.weights("weights", RUNS, "sgd", tokens, None)
    assert list(heat.data[0].y) == ["fc1", "fc2", "fc3"]  # model order; the head has no alpha
    assert [t.name for t in trend.data] == ["sgd · mean α", "sgd · weighted α̂", "adam · mean α",
                                            "adam · weighted α̂"]
    csv = _csv(app.callbacks.download("weights", 1, RUNS, "sgd", last, steps, "loss", "random", tokens))
    assert set(csv["probe"]) == {"weights"} and "fc1/alpha" in set(csv["key"])


def test_a_probe_missing_from_the_store_is_explained(tmp_path):
    path = tmp_path / "metrics-only.sqlite"
    with Store(path) as store:
        write_run(store, "only", n_steps=3, grid=5, probes=("metrics",))
    app = create_app([path])
    try:
        tokens = app.catalog.tokens()
        *figs, notice, notice_style, content_style, _ = app.callbacks.hessian("hessian", ["only"], "only", tokens, None)
        text = "".join(str(getattr(n, "children", n)) for n in notice)
        assert text == "No hessian results in this run yet — run landscape analyze --probes hessian."
        assert any(getattr(n, "children", None) == "landscape analyze --probes hessian" for n in notice)  # as code
        assert notice_style == {} and content_style == {"display": "none"}
        for tab in ("sharpness", "collapse"):
            out = getattr(app.callbacks, tab)(tab, ["only"], tokens, None)
            assert f"No {tab} results in this run yet" in "".join(str(n) for n in out[1])
        out = app.callbacks.dynamics("dynamics", ["only"], tokens, None)
        assert "No noise or connectivity results in this run yet" in "".join(str(n) for n in out[2])
        out = app.callbacks.weights("weights", ["only"], "only", tokens, None)
        assert "No weights results in this run yet" in "".join(str(n) for n in out[2])
        _, _, notice, *_ = app.callbacks.landscape("landscape", ["only"], "only", 0, [0, 100, 200], "loss", "random",
                                                   "slice", tokens, None)
        assert "No slices results in this run yet" in "".join(str(n) for n in notice)
    finally:
        app.catalog.close()


def test_notice_sets_commands_as_code():
    parts = notice_children("No x yet — run `landscape analyze --probes x`.")
    assert parts[0] == "No x yet — run " and parts[1].children == "landscape analyze --probes x" and parts[2] == "."
    assert notice_children(None) == []


# -- controls -----------------------------------------------------------------------------------------
def test_step_at_and_slider_marks():
    assert step_at(None, [0, 10, 20]) == 20
    assert step_at(7, [0, 10, 20]) == 20 and step_at(-3, [0, 10, 20]) == 0
    assert step_at(1, []) is None
    marks = slider_marks(list(range(0, 20000, 100)))
    assert len(marks) == 8 and marks[0] == "0" and marks[199] == "19.9k"


def test_checkpoint_slider_follows_new_checkpoints_only_from_the_end(app):
    cb = app.callbacks
    tokens = app.catalog.tokens()
    steps = [0, 100, 200, 300, 400]
    with pytest.raises(PreventUpdate):  # nothing changed
        cb.checkpoint("sgd", tokens, 4, steps)
    max_, marks, value, disabled, new_steps = cb.checkpoint("sgd", tokens, 3, [0, 100, 200, 300])
    assert (max_, value, disabled, new_steps) == (4, 4, False, steps)  # was at the end: follows to the newest
    _, _, value, _, _ = cb.checkpoint("sgd", tokens, 1, [0, 100, 200, 300])
    assert value == 1  # stays on step 100
    assert cb.focus_options(["adam"], "sgd") == ([{"label": "adam", "value": "adam"}], "adam")
    options, value = cb.run_options(tokens, ["adam", "gone"], [{"label": "gone", "value": "gone"}])
    assert [o["value"] for o in options] == RUNS and value == ["adam"]
    options, value = cb.run_options(tokens, [], [{"label": k, "value": k} for k in RUNS])
    assert options is dash.no_update and value is dash.no_update  # a cleared selection stays cleared
    options, value = cb.run_options(tokens, [], [])
    assert value == RUNS  # the first runs to appear in an empty store are selected


# -- live updates ---------------------------------------------------------------------------------------
def test_an_appended_row_is_picked_up_through_the_change_token(fresh_store):
    app = create_app([fresh_store])
    cb = app.callbacks
    try:
        tokens = app.catalog.tokens()
        figure, *_, overview_fp = cb.overview("overview", RUNS, tokens, None)
        *_, hessian_fp = cb.hessian("hessian", RUNS, "sgd", tokens, None)
        reads = []
        original = app.catalog.stores[0].arrays
        app.catalog.stores[0].arrays = lambda *a, **k: reads.append(a) or original(*a, **k)

        with Store(fresh_store) as writer:  # another process would do the same: a training monitor row
            writer.write_result("sgd", 450, "monitor", Result(scalars={"train_loss": 0.001, "lr": 0.05}))
        new_tokens, live_label = cb.poll(7, tokens)
        assert new_tokens != tokens and live_label.startswith("● live · updated")

        figure, *_, new_fp = cb.overview("overview", RUNS, new_tokens, overview_fp)
        train = [t for t in figure.data if t.name == "sgd · train" and t.xaxis == "x"][0]
        assert train.x[-1] == 450 and train.y[-1] == pytest.approx(0.001)
        assert new_fp != overview_fp
        with pytest.raises(PreventUpdate):  # the Hessian view's data did not change: no redraw, no array reads
            cb.hessian("hessian", RUNS, "sgd", new_tokens, hessian_fp)
        cb.hessian("hessian", RUNS, "sgd", new_tokens, None)
        assert reads == []  # densities come from the id-keyed cache
        card = str(cb.summary(["sgd"], new_tokens))
        assert "monitor to step 450" in card
    finally:
        app.catalog.close()


def test_a_new_run_appears_in_the_picker(fresh_store):
    app = create_app([fresh_store])
    try:
        tokens = app.catalog.tokens()
        with Store(fresh_store) as writer:
            write_run(writer, "late", n_steps=2, grid=5, probes=("metrics",))
        new_tokens, _ = app.callbacks.poll(1, tokens)
        options, value = app.callbacks.run_options(new_tokens, RUNS, [{"label": k, "value": k} for k in RUNS])
        assert [o["value"] for o in options] == RUNS + ["late"]
        assert value is dash.no_update  # the user's selection is kept
    finally:
        app.catalog.close()


def test_a_rerun_probe_replaces_the_older_result(fresh_store):
    with Store(fresh_store) as writer:
        writer.write_result("sgd", 0, "sharpness", Result(scalars={"worst_case": 123.0}, params={"rho": 0.1}))
    catalog = Catalog([fresh_store])
    try:
        frame = catalog.scalars([catalog.ref("sgd")], ["sharpness"])
        at_zero = frame[(frame["step"] == 0) & (frame["key"] == "worst_case")]
        assert at_zero["value"].tolist() == [123.0]
        assert set(frame[frame["step"] == 0]["key"]) == {"worst_case"}
    finally:
        catalog.close()


# -- downloads ------------------------------------------------------------------------------------------
def _csv(payload: dict) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(payload["content"]))


def test_each_tab_downloads_its_data_as_csv(app):
    tokens, steps, last = first_view(app)
    cb = app.callbacks
    with pytest.raises(PreventUpdate):
        cb.download("overview", 0, RUNS, "sgd", last, steps, "loss", "random", tokens)
    payload = cb.download("hessian", 1, RUNS, "sgd", last, steps, "loss", "random", tokens)
    frame = _csv(payload)
    assert payload["filename"] == "hessian.csv"
    assert list(frame.columns) == ["run", "step", "probe", "key", "value", "valid"]
    assert set(frame["probe"]) == {"hessian"} and set(frame["run"]) == set(RUNS)
    payload = cb.download("landscape", 1, RUNS, "sgd", 1, steps, "loss", "random", tokens)
    grid = _csv(payload)
    assert payload["filename"] == "landscape_sgd_step100.csv"
    assert {"x", "y", "loss", "accuracy", "test_loss", "test_accuracy"} <= set(grid.columns)
    stored = app.catalog.stores[0].arrays("sgd", 100, "slices")
    surface = grid[grid["plane"] == "random"]
    assert len(surface) == 9 * 9
    np.testing.assert_allclose(surface["loss"].to_numpy(), stored["loss"].ravel())
    line = grid[grid["plane"] == "interpolation"]
    np.testing.assert_allclose(line["x"].to_numpy(), stored["interp_x"])
    np.testing.assert_allclose(line["loss"].to_numpy(), stored["interp_loss"])
    assert line["y"].isna().all()
    pca = _csv(cb.download("landscape", 1, RUNS, "sgd", 1, steps, "loss", "pca", tokens))
    assert set(pca["plane"]) == {"pca"} and set(pca["step"]) == {400}


def test_png_export_is_configured_on_every_graph(app):
    from dashboard.layout import graph_config

    config = graph_config("hessian-trace")
    assert config["toImageButtonOptions"] == {"format": "png", "filename": "hessian-trace", "scale": 2}
    layout = app.layout()
    graphs = [c for c in _walk(layout) if type(c).__name__ == "Graph"]
    assert len(graphs) == sum(len(g) for g in TAB_GRAPHS.values())
    assert all(g.config["toImageButtonOptions"]["format"] == "png" for g in graphs)


def _walk(component):
    yield component
    children = getattr(component, "children", None)
    if children is None or isinstance(children, (str, int, float)):
        return
    for child in children if isinstance(children, list) else [children]:
        yield from _walk(child)


def test_catalog_rejects_a_non_store_file(tmp_path: Path):
    bogus = tmp_path / "notes.sqlite"
    bogus.write_text("not a database")
    with pytest.raises(StoreError):
        Catalog([bogus])


def test_an_empty_store_says_how_to_fill_it(tmp_path):
    path = tmp_path / "empty.sqlite"
    Store(path).close()
    app = create_app([path])
    try:
        tokens = app.catalog.tokens()
        assert "No runs in the store yet" in str(app.callbacks.summary([], tokens))
        figure, notice, *_ = app.callbacks.overview("overview", [], tokens, None)
        assert len(figure.data) == 0 and "Select one or more runs" in str(notice)
        assert app.callbacks.checkpoint_text(0, []) == "no checkpoints yet"
    finally:
        app.catalog.close()


def test_figures_module_does_not_need_dash():
    code = "import sys, dashboard.figures; print('dash' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
