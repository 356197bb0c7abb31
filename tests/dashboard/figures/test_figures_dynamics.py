"""Training dynamics figures (dashboard.figures.dynamics): preconditioned sharpness, noise scale, connectivity."""

from __future__ import annotations

import numpy as np
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


def test_preconditioned_sharpness_against_its_threshold_and_the_raw_top_eigenvalue():
    steps = np.array([0, 10, 20])
    rows = (series_rows("adam", "sharpness", "lambda_max_preconditioned", steps, [100.0, 3000.0, 3800.0])
            + series_rows("adam", "sharpness", "preconditioned_threshold", steps, [3800.0] * 3)
            + series_rows("adam", "sharpness", "lambda_max", steps, [1.0, 5.0, 8.0])
            + series_rows("sgd", "sharpness", "lambda_max", steps, [1.0, 2.0, 3.0]))  # no optimizer state: left out
    fig = figures.preconditioned_sharpness_figure(long_frame(rows))
    names = [t.name for t in fig.data]
    assert names == ["adam · λmax(P⁻¹H)", "adam · threshold", "adam · λmax(H)"]
    np.testing.assert_array_equal(fig.data[0].y, [100.0, 3000.0, 3800.0])
    assert fig.data[1].line.dash == "dash" and fig.data[2].line.dash == "dot"
    assert fig.layout.yaxis.type == "log"  # 1 … 3800 spans more than two decades
    empty = figures.preconditioned_sharpness_figure(long_frame(rows[-3:]))
    assert not empty.data and "needs optimizer state" in annotation_texts(empty)[0]


def test_noise_scale_draws_both_scales_per_run():
    steps = np.array([0, 1, 2])
    rows = (series_rows("a", "noise", "b_simple", steps, [10.0, 100.0, 2000.0])
            + series_rows("a", "noise", "b_noise", steps, [4.0, 40.0, 800.0])
            + series_rows("b", "noise", "b_simple", steps, [5.0, 6.0, 7.0]))
    fig = figures.noise_scale_figure(long_frame(rows), colors={"a": "#000000"})
    assert [t.name for t in fig.data] == ["a · B_simple", "a · B_noise", "b · B_simple"]
    assert fig.data[0].line.color == "#000000" and fig.data[1].line.dash == "dash"
    assert fig.layout.yaxis.type == "log"
    assert "No gradient noise" in annotation_texts(figures.noise_scale_figure(long_frame([])))[0]


def test_connectivity_draws_the_curve_the_line_and_the_aligned_line():
    t = np.linspace(0, 1, 5)
    arrays = {"t": t, "curve_loss": np.array([0.1, 0.15, 0.2, 0.15, 0.1]),
              "line_loss": np.array([0.1, 1.0, 2.0, 1.0, 0.1]), "aligned_line_loss": np.array([0.1, 0.4, 0.6, 0.4, 0.1])}
    fig = figures.connectivity_figure({"pair": arrays, "other": {"t": t, "line_loss": arrays["line_loss"]}})
    assert [t.name for t in fig.data] == ["pair · trained curve", "pair · straight line", "pair · line after alignment",
                                          "other · straight line"]
    np.testing.assert_allclose(fig.data[1].customdata, [0.0, 0.9, 1.9, 0.9, 0.0])  # the rise above the chord
    assert [t.line.dash for t in fig.data[:3]] == ["solid", "dash", "dot"]
    assert "No connectivity" in annotation_texts(figures.connectivity_figure({"x": {"t": t}}))[0]
