"""Neural-collapse measures and cosine matrices (dashboard.figures.collapse)."""

from __future__ import annotations

import numpy as np
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


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
