"""The shared look of the figures: run colours, the empty figure and log-axis ticks."""

from __future__ import annotations

import numpy as np
from figure_frames import annotation_texts

from dashboard import figures
from dashboard.figures._style import log_ticks


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


def test_log_ticks_stay_inside_the_range():
    ticks = log_ticks(np.log10(0.03), np.log10(7.0))
    assert ticks == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
