"""Landscape slices: 2-D surfaces, 1-D slices (dashboard.figures.surfaces)."""

from __future__ import annotations

import numpy as np
import pytest
from figure_frames import annotation_texts

from dashboard import figures
from dashboard.figures.surfaces import _bilinear


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
