"""Comparison figures (shared scales, difference panel) and the publication style; axis titles everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from figure_frames import long_frame, series_rows

from dashboard import figures
from dashboard.figures.compare import resample


def _surface(scale: float, n: int = 5) -> dict[str, np.ndarray]:
    x = np.linspace(-1.0, 1.0, n)
    y = np.linspace(-0.5, 0.5, n - 1)
    xx, yy = np.meshgrid(x, y)
    return {"x": x, "y": y, "loss": scale * (0.1 + xx ** 2 + yy ** 2), "accuracy": np.clip(1 - xx ** 2, 0, 1)}


def test_surfaces_share_one_colour_scale_and_the_difference_is_b_minus_a() -> None:
    a, b = _surface(1.0), _surface(3.0)
    fig = figures.surface_comparison_figure(a, b, names=("sgd @ 0", "sgd @ 400"))
    assert [t.coloraxis for t in fig.data] == ["coloraxis", "coloraxis", "coloraxis2"]
    logs = np.log10(np.concatenate([a["loss"].ravel(), b["loss"].ravel()]))
    assert fig.layout.coloraxis.cmin == pytest.approx(logs.min(), abs=0) and fig.layout.coloraxis.cmax == logs.max()
    np.testing.assert_array_equal(fig.data[2].z, b["loss"] - a["loss"])
    span = np.abs(b["loss"] - a["loss"]).max()
    assert (fig.layout.coloraxis2.cmin, fig.layout.coloraxis2.cmax, fig.layout.coloraxis2.cmid) == (-span, span, 0.0)
    titles = [ann.text for ann in fig.layout.annotations]
    assert titles == ["A: sgd @ 0", "B: sgd @ 400", "Difference B − A"]


def test_resample_is_bilinear_and_nan_outside_the_source_grid() -> None:
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0])
    z = np.array([[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]])  # z = x + 2y: bilinear reproduces it exactly
    out = resample(x, y, z, np.array([0.5, 1.5, 3.0]), np.array([1.0]))
    np.testing.assert_allclose(out[0, :2], [2.5, 3.5], rtol=0, atol=1e-15)
    assert np.isnan(out[0, 2])
    assert resample(x, y, z, x, y) is z


def test_densities_share_their_ranges_and_differ_on_a_common_grid() -> None:
    grid = np.linspace(0.0, 4.0, 5)
    a = {"density_grid": grid, "density_curve": np.array([1.0, 0.5, 0.25, 0.125, 0.0625])}
    b = {"density_grid": grid, "density_curve": np.array([0.5, 0.5, 0.5, 0.5, 0.5])}
    fig = figures.density_comparison_figure(a, b)
    np.testing.assert_allclose(fig.data[2].y, b["density_curve"] - a["density_curve"], rtol=0, atol=1e-15)
    assert fig.layout.yaxis.range == fig.layout.yaxis2.range and fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.range == fig.layout.xaxis3.range == (0.0, 4.0)
    missing = figures.density_comparison_figure(a, {}, names=("a", "b"))
    assert len(missing.data) == 0 and "No spectral density for b." == missing.layout.annotations[0].text


def _axis_titles(fig) -> list[tuple[str, str | None]]:
    """(axis name, title) of every x and y axis that carries a trace."""
    used = {(t.xaxis or "x", t.yaxis or "y") for t in fig.data if hasattr(t, "xaxis")}  # 2-D traces only
    names = set()
    for xa, ya in used:
        names |= {"xaxis" + xa[1:], "yaxis" + ya[1:]}
    return [(n, fig.layout[n].title.text) for n in sorted(names)]


def test_every_small_multiple_has_labelled_axes() -> None:
    steps = [0, 100, 200]
    rows = []
    for key in figures.SHARPNESS_MEASURES:
        rows += series_rows("a", "sharpness", key, steps, [0.1, 0.2, 0.3])
    for key in ("nc1", "nc2_etf_distance", "nc3_self_duality", "nc4_ncc_mismatch"):
        rows += series_rows("a", "collapse", key, steps, [1.0, 0.5, 0.1])
    for key in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "sc_fraction", "nlm_cosine",
                "weight_norm", "logit_norm"):
        rows += series_rows("a", "grokking", key, steps, [0.2, 0.5, 0.9])
    frame = long_frame(rows)
    cos = np.eye(3)
    built = [figures.sharpness_figure(frame), figures.collapse_figure(frame), figures.grokking_figure(frame),
             figures.training_curves_figure(frame), figures.cosine_matrix_figure({"cosine_means": cos, "cosine_weights": cos}),
             figures.surface_comparison_figure(_surface(1.0), _surface(2.0))]
    for fig in built:
        titles = _axis_titles(fig)
        assert titles and all(t for _, t in titles), (fig.layout.title.text, titles)


def test_publication_style_swaps_the_palette_for_okabe_ito_rank_by_rank() -> None:
    frame = long_frame(series_rows("a", "metrics", "train_loss", [0, 1], [1.0, 0.5])
                       + series_rows("b", "metrics", "train_loss", [0, 1], [2.0, 1.0])
                       + series_rows("a", "hessian", "trace", [0, 1], [3.0, 4.0])
                       + series_rows("a", "hessian", "trace_stderr", [0, 1], [0.1, 0.1]))
    curves = figures.publication(figures.training_curves_figure(frame))
    assert [t.line.color for t in curves.data] == [figures.OKABE_ITO[0], figures.OKABE_ITO[1]]
    assert curves.layout.template.layout.font.family.startswith("Arial")
    band = figures.publication(figures.hessian_trace_figure(frame))
    assert band.data[0].fillcolor == "rgba(0,114,178,0.18)"  # the translucent band follows its run's colour
    original = figures.training_curves_figure(frame)
    assert original.data[0].line.color == figures.PALETTE[0]  # the input figure is left as it was
