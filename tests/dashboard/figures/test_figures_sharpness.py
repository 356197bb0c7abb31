"""Sharpness measures over training (dashboard.figures.sharpness)."""

from __future__ import annotations

import numpy as np
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


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
