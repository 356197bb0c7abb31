"""Hessian eigenvalues, trace and spectral density (dashboard.figures.spectra)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


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
