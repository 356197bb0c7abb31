"""Unit tests of dashboard.figures on small hand-made inputs (no store, no app)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import figures
from dashboard.figures import _bilinear, _log_ticks


def long_frame(rows: list[tuple]) -> pd.DataFrame:
    """A scalars table from (run, step, probe, key, value) tuples, all valid."""
    frame = pd.DataFrame(rows, columns=["run", "step", "probe", "key", "value"])
    return frame.assign(valid=True)


def series_rows(run: str, probe: str, key: str, steps, values) -> list[tuple]:
    return [(run, int(s), probe, key, float(v)) for s, v in zip(steps, values)]


def annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


# -- helpers -----------------------------------------------------------------------------------------
def test_run_colors_follow_the_palette_and_cycle():
    runs = [f"r{i}" for i in range(12)]
    colors = figures.run_colors(runs)
    assert colors["r0"] == figures.PALETTE[0]
    assert colors["r10"] == figures.PALETTE[0]  # cycles after ten runs
    assert len(set(colors[r] for r in runs[:10])) == 10


def test_empty_figure_carries_the_message_and_no_traces():
    fig = figures.empty_figure("No data here.", title="T")
    assert len(fig.data) == 0
    assert annotation_texts(fig) == ["No data here."]


def test_scalars_without_required_columns_is_a_clear_error():
    with pytest.raises(ValueError, match="missing key, value"):
        figures.training_curves_figure(pd.DataFrame({"run": ["a"], "step": [0]}))


def test_bilinear_reproduces_a_bilinear_function_exactly():
    # Bilinear interpolation is exact for z = a + b·x + c·y + d·x·y (its own function class), so the
    # only error is floating-point rounding.
    x = np.array([-1.0, 0.0, 0.5, 2.0])
    y = np.array([-2.0, 1.0, 3.0])
    xx, yy = np.meshgrid(x, y)
    z = 1.5 + 2.0 * xx - 0.5 * yy + 0.25 * xx * yy
    px = np.array([-0.3, 1.2, 0.5, -1.0])
    py = np.array([0.4, 2.9, -2.0, 3.0])
    expected = 1.5 + 2.0 * px - 0.5 * py + 0.25 * px * py
    np.testing.assert_allclose(_bilinear(x, y, z, px, py), expected, rtol=0, atol=1e-12)


def test_log_ticks_stay_inside_the_range():
    ticks = _log_ticks(np.log10(0.03), np.log10(7.0))
    assert ticks == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


# -- metrics / monitor -------------------------------------------------------------------------------
def _training_frame() -> pd.DataFrame:
    rows = []
    for run, scale in (("a", 1.0), ("b", 2.0)):
        monitor_steps = np.arange(0, 100, 10)
        rows += series_rows(run, "monitor", "train_loss", monitor_steps, scale * np.exp(-monitor_steps / 50))
        rows += series_rows(run, "monitor", "train_accuracy", monitor_steps, 1 - np.exp(-monitor_steps / 30))
        ckpt = np.array([0, 50, 90])
        rows += series_rows(run, "metrics", "train_loss", ckpt, [9.0, 9.0, 9.0])  # sparser: loses to the monitor
        rows += series_rows(run, "metrics", "test_loss", ckpt, scale * np.array([2.0, 1.0, 0.8]))
        rows += series_rows(run, "metrics", "test_accuracy", ckpt, [0.1, 0.5, 0.7])
    return long_frame(rows)


def test_training_curves_overlay_runs_with_a_log_loss_axis():
    fig = figures.training_curves_figure(_training_frame())
    assert len(fig.data) == 8  # 2 runs × (train, test) × (loss, accuracy)
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis2.tickformat == ".0%"
    train_a = [t for t in fig.data if t.name == "a · train" and t.xaxis == "x"][0]
    np.testing.assert_array_equal(train_a.x, np.arange(0, 100, 10))  # the denser monitor series wins
    np.testing.assert_allclose(train_a.y, np.exp(-np.arange(0, 100, 10) / 50))
    colors = {t.line.color for t in fig.data if t.legendgroup == "b"}
    assert colors == {figures.PALETTE[1]}  # one colour per run on every trace
    assert sum(bool(t.showlegend) for t in fig.data) == 4  # each (run, split) listed once


def test_training_curves_leave_out_invalid_results_and_honour_given_colours():
    frame = _training_frame()
    frame.loc[(frame["run"] == "a") & (frame["key"] == "test_loss") & (frame["step"] == 50), "valid"] = False
    fig = figures.training_curves_figure(frame, colors={"a": "#000000"})
    test_a = [t for t in fig.data if t.name == "a · test" and t.xaxis == "x"][0]
    np.testing.assert_array_equal(test_a.x, [0, 90])
    assert test_a.line.color == "#000000"


def test_training_curves_without_data_say_so():
    fig = figures.training_curves_figure(long_frame([("a", 0, "hessian", "trace", 1.0)]))
    assert len(fig.data) == 0
    assert "No loss or accuracy" in annotation_texts(fig)[0]


# -- landscape ---------------------------------------------------------------------------------------
def _grid(with_pca: bool = False) -> dict[str, np.ndarray]:
    x = np.linspace(-1, 1, 5)
    y = np.linspace(-1, 1, 4)
    xx, yy = np.meshgrid(x, y)
    loss = 0.1 + xx ** 2 + 2 * yy ** 2
    arrays = {"x": x, "y": y, "loss": loss, "accuracy": 1 - loss / loss.max()}
    if with_pca:
        px = np.linspace(-2, 2, 5)
        py = np.linspace(-1, 1, 5)
        pxx, pyy = np.meshgrid(px, py)
        arrays.update(pca_x=px, pca_y=py, pca_loss=0.5 + pxx ** 2 + pyy ** 2, pca_accuracy=np.ones((5, 5)),
                      path_x=np.array([2.0, 1.0, 0.0]), path_y=np.array([1.0, 0.0, 0.0]),
                      path_steps=np.array([0, 100, 200]), explained_variance=np.array([0.8, 0.15]))
    return arrays


def test_surface_of_the_random_plane_shows_the_input_grid():
    arrays = _grid()
    fig = figures.surface_figure(arrays, plane="random")
    surface, contour = fig.data[0], fig.data[1]
    assert surface.type == "surface" and contour.type == "contour"
    np.testing.assert_array_equal(surface.z, arrays["loss"])
    np.testing.assert_array_equal(surface.x, arrays["x"])
    np.testing.assert_array_equal(surface.y, arrays["y"])
    np.testing.assert_allclose(contour.z, np.log10(arrays["loss"]))  # log-scale contours
    np.testing.assert_array_equal(contour.customdata, arrays["loss"])  # hover shows the loss itself
    assert [t.name for t in fig.data[2:]] == ["checkpoint", "checkpoint"]


def test_surface_of_accuracy_uses_linear_contours():
    arrays = _grid()
    fig = figures.surface_figure(arrays, metric="accuracy", plane="random")
    np.testing.assert_array_equal(fig.data[1].z, arrays["accuracy"])
    assert fig.data[1].colorbar.tickformat == ".0%"


def test_surface_in_the_pca_plane_draws_the_trajectory():
    arrays = _grid(with_pca=True)
    fig = figures.surface_figure(arrays, plane="auto", highlight_step=120)
    np.testing.assert_array_equal(fig.data[0].z, arrays["pca_loss"])
    path3d, path2d, star = fig.data[2], fig.data[3], fig.data[4]
    np.testing.assert_array_equal(path2d.x, arrays["path_x"])
    np.testing.assert_array_equal(path2d.text, arrays["path_steps"])
    # The 3-D path lies on the surface: the path points (2, 1), (1, 0), (0, 0) are grid nodes, where bilinear
    # interpolation returns pca_loss = 0.5 + x² + y² exactly; the path is lifted by 1% of the loss range.
    lift = 0.01 * (arrays["pca_loss"].max() - arrays["pca_loss"].min())
    np.testing.assert_allclose(np.asarray(path3d.z) - lift, [5.5, 1.5, 0.5], atol=1e-12)
    assert star.name == "step 100"  # nearest path step to 120
    assert "PC1 (80.0% of variance)" == fig.layout.xaxis.title.text


def test_surface_asked_for_a_missing_pca_plane_says_so():
    fig = figures.surface_figure(_grid(), plane="pca")
    assert len(fig.data) == 0
    assert "no PCA-plane train loss grid" in annotation_texts(fig)[0]


def test_surface_rejects_bad_arguments():
    with pytest.raises(ValueError, match="metric must be one of"):
        figures.surface_figure(_grid(), metric="sharpness")
    with pytest.raises(ValueError, match="plane must be"):
        figures.surface_figure(_grid(), plane="tsne")
    bad = dict(_grid(), loss=np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"shape \(len\(y\), len\(x\)\)"):
        figures.surface_figure(bad, plane="random")


def test_slice_curves_prefer_the_stored_line_and_fall_back_to_the_grid_row():
    grid = _grid()
    line = {"line_x": np.array([-1.0, 0.0, 1.0]), "line_loss": np.array([2.0, 1.0, 2.0]),
            "line_accuracy": np.array([0.5, 0.9, 0.5])}
    curves = figures.slice_curves({**grid, **line})
    np.testing.assert_array_equal(curves["x"], line["line_x"])
    assert "test_loss" not in curves
    with_test = {**grid, **line, "test_loss": grid["loss"] + 1.0}
    curves = figures.slice_curves(with_test)  # train and test along the same direction: the grid row y≈0
    row = int(np.argmin(np.abs(grid["y"])))
    np.testing.assert_array_equal(curves["x"], grid["x"])
    np.testing.assert_array_equal(curves["loss"], grid["loss"][row])
    np.testing.assert_array_equal(curves["test_loss"], grid["loss"][row] + 1.0)
    assert figures.slice_curves({}) == {}


def test_slice_figure_puts_loss_left_and_accuracy_right():
    x = np.linspace(-1, 1, 11)
    curves = {"a": {"x": x, "loss": x ** 2, "accuracy": 1 - x ** 2 / 2, "test_loss": x ** 2 + 0.1},
              "b": {"x": x, "loss": 2 * x ** 2}}
    fig = figures.slice_figure(curves)
    assert len(fig.data) == 4
    axes = {t.name: t.yaxis for t in fig.data}
    assert axes == {"a · train loss": "y", "a · test loss": "y", "a · train accuracy": "y2", "b · train loss": "y"}
    assert fig.layout.yaxis2.tickformat == ".0%"
    assert [t.line.dash for t in fig.data if t.legendgroup == "a"] == ["solid", "dash", "solid"]
    assert "No 1-D slice" in annotation_texts(figures.slice_figure({}))[0]


# -- hessian -----------------------------------------------------------------------------------------
def _hessian_frame(k: int = 3) -> pd.DataFrame:
    steps = np.array([0, 10, 20])
    rows = []
    for i in range(k):
        rows += series_rows("a", "hessian", f"lambda_{i + 1}", steps, (k - i) * (1 + steps / 10))
    rows += series_rows("a", "hessian", "trace", steps, [10.0, 20.0, 30.0])
    rows += series_rows("a", "hessian", "trace_stderr", steps, [1.0, 2.0, 0.5])
    rows += series_rows("b", "hessian", "lambda_max", steps, [1.0, 2.0, 3.0])
    return long_frame(rows)


def test_eigenvalue_figure_draws_top_k_and_the_edge_of_stability():
    fig = figures.hessian_eigenvalues_figure(_hessian_frame(), lr={"a": 0.04})
    names = [t.name for t in fig.data]
    assert names.count("a · λ1…λ3") == 3  # λ1 carries the legend entry for the family
    edge = [t for t in fig.data if t.name == "a · 2/η"][0]
    np.testing.assert_allclose(edge.y, [50.0, 50.0])  # 2 / 0.04
    np.testing.assert_array_equal(edge.x, [0, 20])
    lam1 = fig.data[0]
    np.testing.assert_allclose(lam1.y, 3 * (1 + np.array([0, 10, 20]) / 10))
    assert lam1.line.width > fig.data[1].line.width  # λ1 bold, the rest fainter
    assert "b · λmax" in names  # falls back to lambda_max without lambda_i keys
    assert not any("2/η" in n for n in names if n.startswith("b"))  # no lr for b: no line


def test_trace_figure_has_a_band_of_one_standard_error():
    fig = figures.hessian_trace_figure(_hessian_frame())
    band, line = fig.data[0], fig.data[1]
    np.testing.assert_allclose(band.y, [11.0, 22.0, 30.5, 29.5, 18.0, 9.0])
    assert band.fill == "toself"
    np.testing.assert_allclose(line.y, [10.0, 20.0, 30.0])
    assert len(fig.data) == 2  # run b has no trace


def test_hessian_figures_without_data_say_so():
    empty = long_frame([("a", 0, "metrics", "train_loss", 1.0)])
    assert "No Hessian eigenvalues" in annotation_texts(figures.hessian_eigenvalues_figure(empty))[0]
    assert "No Hessian trace" in annotation_texts(figures.hessian_trace_figure(empty))[0]
    assert "No spectral density" in annotation_texts(figures.spectral_density_figure({}))[0]
    assert "No spectral densities" in annotation_texts(figures.spectrogram_figure({}))[0]


def test_spectral_density_uses_a_log_axis_spanning_seven_decades_below_the_peak():
    grid = np.linspace(-1, 5, 61)
    curve = np.exp(-0.5 * (grid - 2) ** 2) + 1e-30
    fig = figures.spectral_density_figure({"a @ 10": {"density_grid": grid, "density_curve": curve}})
    assert fig.layout.yaxis.type == "log"
    np.testing.assert_allclose(fig.layout.yaxis.range, [-7.0, 0.3])  # peak 1 → 10^-7 … 10^0.3
    np.testing.assert_array_equal(fig.data[0].y, curve)


def test_spectrogram_stacks_log_densities_over_steps():
    grid = np.linspace(0, 1, 5)
    densities = {20: {"density_grid": grid, "density_curve": np.full(5, 0.5)},
                 10: {"density_grid": grid, "density_curve": np.array([1.0, 0.1, 0.0, 0.1, 1.0])}}
    fig = figures.spectrogram_figure(densities, run="a")
    heat = fig.data[0]
    np.testing.assert_array_equal(heat.x, [10, 20])  # sorted by step
    assert fig.layout.xaxis.type == "category"  # one evenly spaced column per checkpoint
    z = np.asarray(heat.z)
    assert z.shape == (5, 2)
    np.testing.assert_allclose(z[:, 0], [0.0, -1.0, -7.0, -1.0, 0.0])  # zero clipped 7 decades below peak 1
    np.testing.assert_allclose(z[:, 1], np.log10(0.5))
    assert "— a" in fig.layout.title.text


def test_spectrogram_interpolates_curves_on_different_grids():
    densities = {0: {"density_grid": np.array([0.0, 1.0]), "density_curve": np.array([1.0, 1.0])},
                 1: {"density_grid": np.array([0.0, 2.0, 4.0]), "density_curve": np.array([1.0, 0.5, 1.0])}}
    heat = figures.spectrogram_figure(densities).data[0]
    np.testing.assert_allclose(heat.y, [0.0, 2.0, 4.0])  # common grid over both, as many points as the longest
    z = np.asarray(heat.z)
    np.testing.assert_allclose(z[:, 1], np.log10([1.0, 0.5, 1.0]))
    np.testing.assert_allclose(z[0, 0], 0.0)
    np.testing.assert_allclose(z[1:, 0], -7.0)  # outside the first grid: zero density, clipped


# -- sharpness / collapse ----------------------------------------------------------------------------
def test_sharpness_has_one_panel_per_measure_and_logs_wide_ranges():
    steps = np.array([0, 1, 2])
    rows = (series_rows("a", "sharpness", "worst_case", steps, [0.1, 0.2, 0.3])
            + series_rows("a", "sharpness", "average_case", steps, [1e-5, 1e-3, 1e-1])
            + series_rows("b", "sharpness", "worst_case", steps, [0.2, 0.2, 0.2])
            + series_rows("a", "sharpness", "unknown_measure", steps, [1, 2, 3]))
    fig = figures.sharpness_figure(long_frame(rows))
    titles = annotation_texts(fig)
    assert titles == [figures.SHARPNESS_MEASURES["worst_case"], figures.SHARPNESS_MEASURES["average_case"]]
    assert len(fig.data) == 3
    assert fig.layout.yaxis.type != "log" and fig.layout.yaxis2.type == "log"
    assert "No sharpness" in annotation_texts(figures.sharpness_figure(long_frame([])))[0]


def test_collapse_draws_nc1_to_nc4_on_log_axes():
    steps = np.array([0, 5, 10])
    rows = []
    for key in ("nc1", "nc2_etf_distance", "nc2_equinorm_means", "nc3_self_duality", "nc4_ncc_mismatch",
                "test_nc1"):
        rows += series_rows("a", "collapse", key, steps, [1.0, 0.1, 0.01])
    rows += series_rows("a", "collapse", "nc4_ncc_mismatch", [15], [0.0])  # zero: not drawable on a log axis
    fig = figures.collapse_figure(long_frame(rows))
    assert len(fig.data) == 6
    assert all(fig.layout[f"yaxis{'' if i == 1 else i}"].type == "log" for i in range(1, 5))
    test_nc1 = [t for t in fig.data if t.name == "a · test"][0]
    assert test_nc1.line.dash == "dash"
    nc4 = fig.data[-1]
    assert np.isnan(nc4.y[-1])
    assert "No neural-collapse" in annotation_texts(figures.collapse_figure(None))[0]


def test_cosine_matrix_is_centred_on_zero_and_names_the_etf_target():
    c = 4
    cos = np.full((c, c), -1 / (c - 1))
    np.fill_diagonal(cos, 1.0)
    fig = figures.cosine_matrix_figure({"cosine_means": cos, "cosine_weights": cos * 0.5})
    assert len(fig.data) == 2
    np.testing.assert_array_equal(fig.data[0].z, cos)
    assert (fig.data[0].zmin, fig.data[0].zmax, fig.data[0].zmid) == (-1.0, 1.0, 0.0)
    assert "−1/(C−1) = -0.333" in fig.layout.title.text
    assert "No class-mean cosine" in annotation_texts(figures.cosine_matrix_figure({}))[0]


# -- grokking ----------------------------------------------------------------------------------------
def test_grokking_onset_is_the_first_step_at_95_percent_of_the_best_test_accuracy():
    steps = np.array([0, 100, 200, 300, 400])
    accuracy = np.array([0.1, 0.12, 0.5, 0.86, 0.9])  # 0.95 × 0.9 = 0.855
    assert figures.grokking_onset(steps, accuracy) == 300
    shuffled = np.array([3, 0, 4, 1, 2])
    assert figures.grokking_onset(steps[shuffled], accuracy[shuffled]) == 300
    assert figures.grokking_onset(steps, accuracy, fraction=0.5) == 200
    assert figures.grokking_onset(steps, np.full(5, np.nan)) is None
    assert figures.grokking_onset([], []) is None


def test_sc_onset_is_the_first_step_above_the_threshold():
    steps = np.array([0, 10, 20, 30])
    assert figures.sc_onset(steps, [0.0, 0.005, 0.02, 0.5]) == 20
    assert figures.sc_onset(steps, [0.0, 0.0, 0.0, 0.0]) is None
    assert figures.sc_onset(steps, [0.0, 0.005, 0.02, 0.5], threshold=0.001) == 10


def test_grokking_figure_marks_both_onsets_in_every_panel():
    steps = np.arange(0, 1000, 100)
    test_accuracy = np.where(steps >= 600, 0.99, 0.1)
    sc = np.where(steps >= 300, 0.2, 0.0)
    rows = (series_rows("a", "grokking", "test_accuracy", steps, test_accuracy)
            + series_rows("a", "grokking", "train_accuracy", steps, np.ones(10))
            + series_rows("a", "grokking", "train_loss", steps, np.exp(-steps / 100))
            + series_rows("a", "grokking", "sc_fraction", steps, sc)
            + series_rows("a", "monitor", "weight_norm", np.arange(0, 1000, 10), np.linspace(10, 5, 100))
            + series_rows("a", "grokking", "weight_norm", steps, np.full(10, 99.0)))
    fig = figures.grokking_figure(long_frame(rows))
    lines = {(s.x0, s.line.dash) for s in fig.layout.shapes}
    assert lines == {(600, "dash"), (300, "dot")}
    assert len(fig.layout.shapes) == 12  # two onsets × six panels
    names = [t.name for t in fig.data]
    assert "a · grokking onset @ 600" in names and "a · SC onset @ 300" in names
    weight = [t for t in fig.data if t.hovertemplate and "weight norm" in t.hovertemplate][0]
    assert len(weight.x) == 100  # the denser monitor rows win over the grokking probe's
    assert fig.layout.yaxis2.type == "log"  # the loss panel
    assert "No grokking" in annotation_texts(figures.grokking_figure(long_frame([])))[0]
