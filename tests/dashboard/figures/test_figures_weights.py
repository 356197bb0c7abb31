"""Weight-spectrum figures (dashboard.figures.weights): the layer ESD, the alpha heat map, alpha over training."""

from __future__ import annotations

import numpy as np
import pandas as pd
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


def _arrays() -> dict[str, np.ndarray]:
    # Two layers: "a" with 100 eigenvalues in 4 log bins [1e-2, 1e2] and a fit; "b" too small for one.
    edges = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0], [-1.0, -0.5, 0.0, 0.5, 1.0]])
    return {
        "layer_names": np.array(["a", "b"]), "messages": np.array(["", "too few eigenvalues (5 < 10)"]),
        "alpha": np.array([3.0, np.nan]), "alpha_stderr": np.array([0.2, np.nan]), "xmin": np.array([1.0, np.nan]),
        "n_tail": np.array([40.0, 0.0]), "n_evals": np.array([100.0, 5.0]), "mp_scale": np.array([0.1, 0.2]),
        "mp_ratio": np.array([0.25, 0.5]), "mp_threshold": np.array([0.3, 0.9]), "n_spikes": np.array([7.0, 0.0]),
        "esd_log10_edges": edges, "esd_counts": np.array([[10, 50, 30, 10], [1, 0, 2, 2]]),
    }


def test_esd_figure_draws_the_density_the_power_law_and_the_mp_bulk():
    fig = figures.weights_esd_figure(_arrays())  # no layer given: the first one with a fit
    names = [t.name for t in fig.data]
    assert names[0] == "ESD" and "power law α = 3.00 ± 0.20" in names and "Marchenko–Pastur bulk" in names
    assert "MP edge + TW margin (7 spikes)" in names and "xmin = 1" in names
    esd = fig.data[0]
    edges = 10.0 ** np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(esd.x, np.sqrt(edges[:-1] * edges[1:]))  # geometric bin centres
    np.testing.assert_allclose(esd.y, np.array([10, 50, 30, 10]) / (100 * np.diff(edges)))
    law = next(t for t in fig.data if t.name.startswith("power law"))
    x = np.asarray(law.x)
    assert x[0] == 1.0 and x[-1] == 100.0  # from xmin to the largest eigenvalue
    np.testing.assert_allclose(law.y, 0.4 * 2.0 * x ** -3.0)  # (n_tail/n)(α−1)/xmin (λ/xmin)^−α
    bulk = next(t for t in fig.data if t.name == "Marchenko–Pastur bulk")
    lo, hi = 0.1 * 0.25, 0.1 * 2.25  # s²(1 ∓ √y)²
    assert lo < min(bulk.x) and max(bulk.x) < hi
    u = np.asarray(bulk.x)
    np.testing.assert_allclose(bulk.y, np.sqrt((hi - u) * (u - lo)) / (2 * np.pi * 0.1 * 0.25 * u))
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_esd_figure_of_a_layer_without_a_fit_shows_its_histogram_and_bulk_only():
    fig = figures.weights_esd_figure(_arrays(), "b")
    names = [t.name for t in fig.data]
    assert names[0] == "ESD" and not any(n.startswith("power law") for n in names)
    assert len(fig.data[0].x) == 3  # the empty bin is not drawn on a log axis
    assert "ESD of b" in fig.layout.title.text


def test_esd_figure_without_data_says_so():
    assert "No weight spectra" in annotation_texts(figures.weights_esd_figure({}))[0]
    broken = _arrays()
    broken["esd_log10_edges"] = np.full((2, 5), np.nan)
    broken["messages"] = np.array(["non-finite weights in a.weight (1 NaN, 0 Inf entries)", ""])
    text = annotation_texts(figures.weights_esd_figure(broken, "a"))[0]
    assert text == "No spectrum for a: non-finite weights in a.weight (1 NaN, 0 Inf entries)."


def _weights_frame() -> pd.DataFrame:
    steps = np.array([0, 10, 20])
    rows = []
    for run, shift in (("r1", 0.0), ("r2", 0.5)):
        rows += series_rows(run, "weights", "alpha_mean", steps, [6.0 - shift, 4.0 - shift, 3.0 - shift])
        rows += series_rows(run, "weights", "alpha_weighted", steps, [-8.0, -5.0, -3.0])
    rows += series_rows("r1", "weights", "fc1/alpha", steps, [6.0, 4.0, 2.5])
    rows += series_rows("r1", "weights", "fc2/alpha", steps[1:], [5.0, 3.5])  # no fit at step 0
    rows += series_rows("r1", "weights", "fc1/spectral_norm", steps, [1.0, 2.0, 3.0])
    rows += series_rows("r2", "weights", "fc1/alpha", steps, [9.0, 9.0, 9.0])
    rows += series_rows("r1", "metrics", "train_loss", steps, [1.0, 0.5, 0.2])
    return long_frame(rows)


def test_alpha_heatmap_is_layer_by_step_in_model_order_with_gaps():
    fig = figures.weights_alpha_heatmap_figure(_weights_frame(), run="r1", layers=["fc2", "fc1"])
    heat = fig.data[0]
    assert list(heat.y) == ["fc2", "fc1"] and list(heat.x) == ["0", "10", "20"]
    z = np.asarray(heat.z, dtype=float)
    assert np.isnan(z[0, 0])  # fc2 had no fit at step 0
    np.testing.assert_allclose(z[0, 1:], [5.0, 3.5])
    np.testing.assert_allclose(z[1], [6.0, 4.0, 2.5])
    assert fig.layout.xaxis.type == "category" and "— r1" in fig.layout.title.text
    other = figures.weights_alpha_heatmap_figure(_weights_frame(), run="r2")
    np.testing.assert_allclose(np.asarray(other.data[0].z, dtype=float), [[9.0, 9.0, 9.0]])


def test_alpha_over_training_draws_mean_and_weighted_alpha_per_run():
    fig = figures.weights_alpha_figure(_weights_frame(), colors={"r1": "#111111"})
    names = [t.name for t in fig.data]
    assert names == ["r1 · mean α", "r1 · weighted α̂", "r2 · mean α", "r2 · weighted α̂"]
    np.testing.assert_allclose(fig.data[2].y, [5.5, 3.5, 2.5])
    assert fig.data[0].line.color == "#111111" and fig.data[1].line.dash == "dash"


def test_weights_figures_without_data_say_so():
    empty = long_frame([("a", 0, "metrics", "train_loss", 1.0)])
    assert "No per-layer alpha" in annotation_texts(figures.weights_alpha_heatmap_figure(empty))[0]
    assert "No weight-spectrum alphas" in annotation_texts(figures.weights_alpha_figure(empty))[0]
