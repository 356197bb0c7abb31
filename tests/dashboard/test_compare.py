"""The Compare tab and the trajectory view on synthetic stores, callbacks called as plain functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dash.exceptions import PreventUpdate
from synthetic_runs import write_synthetic_store

from dashboard import create_app, views
from dashboard.compare import CompareCallbacks, comparison, comparison_csv
from dashboard.data import Catalog
from dashboard.layout import MAX_SLIDER_MARKS, slider_marks


@pytest.fixture
def catalog(shared_store):
    opened = Catalog([shared_store])
    yield opened
    opened.close()


def test_two_runs_compare_on_one_scale_with_their_exact_difference(catalog) -> None:
    view = comparison(catalog, None, "sgd", 400, "adam", 400)
    assert view.notice is None and view.has_data
    surface, density = view.figures
    a = catalog.arrays(catalog.ref("sgd"), "slices", 400)
    b = catalog.arrays(catalog.ref("adam"), "slices", 400)
    np.testing.assert_array_equal(surface.data[2].z, b["loss"] - a["loss"])  # same grid: no resampling
    assert surface.layout.coloraxis.cmax == np.log10(np.maximum(a["loss"], b["loss"])).max()
    assert "A = sgd @ 400, B = adam @ 400" in surface.layout.title.text
    ha = catalog.arrays(catalog.ref("sgd"), "hessian", 400)
    hb = catalog.arrays(catalog.ref("adam"), "hessian", 400)
    common = np.linspace(min(ha["density_grid"].min(), hb["density_grid"].min()),
                         max(ha["density_grid"].max(), hb["density_grid"].max()), len(ha["density_grid"]))
    expected = (np.interp(common, hb["density_grid"], hb["density_curve"], left=0, right=0)
                - np.interp(common, ha["density_grid"], ha["density_curve"], left=0, right=0))
    np.testing.assert_allclose(density.data[2].y, expected, rtol=0, atol=0)
    assert comparison(catalog, None, "sgd", 400, "adam", 400, previous=view.fingerprint) is None


def test_two_checkpoints_of_one_run_and_the_csv_of_the_grids(catalog) -> None:
    view = comparison(catalog, None, "sgd", 0, "sgd", 390, metric="accuracy")  # 390 → nearest checkpoint 400
    a = catalog.arrays(catalog.ref("sgd"), "slices", 0)
    b = catalog.arrays(catalog.ref("sgd"), "slices", 400)
    np.testing.assert_array_equal(view.figures[0].data[2].z, b["accuracy"] - a["accuracy"])
    frame, name = comparison_csv(catalog, None, "sgd", 0, "sgd", 390, metric="accuracy")
    assert name == "compare_sgd_0_vs_sgd_400.csv" and len(frame) == a["accuracy"].size
    np.testing.assert_array_equal(frame["b_minus_a"].to_numpy(), (b["accuracy"] - a["accuracy"]).ravel())
    np.testing.assert_array_equal(frame["x"].to_numpy()[: len(a["x"])], a["x"])


def test_a_run_without_the_probes_is_named_in_the_notice(tmp_path: Path) -> None:
    path = write_synthetic_store(tmp_path / "s.sqlite", runs=("full", "bare"), n_steps=3, grid=5,
                                 probes=("metrics", "slices", "hessian"))
    from landscape.store import Store

    with Store(path) as store:
        store.add_run("empty")
    opened = Catalog([path])
    try:
        view = comparison(opened, None, "full", None, "empty", None)
        assert "empty" in view.notice and view.has_data is False
        assert "No slices results for run B." in view.figures[0].layout.annotations[0].text
        none = comparison(opened, None, None, None, "full", None)
        assert none.notice == "Choose run A and run B above."
    finally:
        opened.close()


def test_one_run_defaults_to_its_first_against_its_last_checkpoint(tmp_path: Path) -> None:
    path = write_synthetic_store(tmp_path / "one.sqlite", runs=("solo",), n_steps=4, grid=5, probes=("slices", "hessian"))
    opened = Catalog([path])
    try:
        cb = CompareCallbacks(opened)
        options_a, options_b, a, b = cb.runs(opened.tokens(), None, None)
        assert (a, b) == ("solo", "solo") and options_a == options_b == [{"label": "solo", "value": "solo"}]
        max_a, marks, value_a, disabled, steps = cb.side("solo", opened.tokens(), None, [], first=True)
        assert (max_a, value_a, disabled, steps) == (3, 0, False, [0, 100, 200, 300])
        assert cb.side("solo", opened.tokens(), None, [])[2] == 3
        with pytest.raises(PreventUpdate):  # nothing changed
            cb.side("solo", opened.tokens(), 1, steps)
        out = cb.view("compare", "solo", 0, steps, "solo", 3, steps, "loss", opened.tokens(), None)
        assert len(out[0].data) == 3 and out[3] == {"display": "none"}  # notice hidden: the data are there
        with pytest.raises(PreventUpdate):
            cb.view("overview", "solo", 0, steps, "solo", 3, steps, "loss", opened.tokens(), None)
    finally:
        opened.close()


def test_the_trajectory_view_animates_the_focus_run_and_says_when_it_cannot(catalog, tmp_path: Path) -> None:
    view = views.trajectory(catalog, None, "adam")
    fig = view.figures[0]
    assert view.has_data and [f.name for f in fig.frames] == ["0", "100", "200", "300", "400"]
    arrays = catalog.arrays(catalog.ref("adam"), "slices", 400)
    np.testing.assert_array_equal(fig.data[2].x, arrays["path_x"])
    short = write_synthetic_store(tmp_path / "short.sqlite", runs=("two",), n_steps=2, grid=5, probes=("slices",))
    opened = Catalog([short])
    try:
        missing = views.trajectory(opened, None, "two")
        assert not missing.has_data and "at least three" in missing.notice
    finally:
        opened.close()


def test_the_app_wires_the_trajectory_and_the_compare_tab(shared_store) -> None:
    app = create_app([shared_store])
    try:
        outputs = " ".join(app.callback_map)
        for graph in ("landscape-trajectory", "compare-surface", "compare-density"):
            assert f"{graph}.figure" in outputs
        assert "compare-download.data" in outputs and "compare-a-checkpoint.marks" in outputs
        tokens = app.catalog.tokens()
        fig, fingerprint = app.callbacks.trajectory("landscape", "sgd", "test_loss", tokens, None)
        assert len(fig.frames) == 5 and "train loss" in fig.data[0].name  # the PCA plane has train grids only
        with pytest.raises(PreventUpdate):
            app.callbacks.trajectory("landscape", "sgd", "test_loss", tokens, fingerprint)
    finally:
        app.catalog.close()


def test_slider_marks_stay_few_exact_and_distinct_at_200_checkpoints() -> None:
    for steps in (list(range(0, 20000, 100)), [10_000 + i for i in range(200)], sorted({int(s) for s in np.geomspace(1, 3e9, 200)})):
        marks = slider_marks(steps)
        labels = list(marks.values())
        assert len(marks) <= MAX_SLIDER_MARKS and 0 in marks and len(steps) - 1 in marks
        assert len(set(labels)) == len(labels) and all(len(label) <= 7 for label in labels), labels
    assert slider_marks([10_000 + i for i in range(200)])[199] == "10,199"
