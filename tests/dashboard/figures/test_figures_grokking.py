"""Grokking and Softmax-Collapse onsets and the grokking figure (dashboard.figures.grokking)."""

from __future__ import annotations

import numpy as np
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


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
