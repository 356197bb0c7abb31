"""Loss and accuracy over training steps (dashboard.figures.curves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from figure_frames import annotation_texts, long_frame, series_rows

from dashboard import figures


def test_scalars_without_required_columns_is_a_clear_error():
    with pytest.raises(ValueError, match="missing key, value"):
        figures.training_curves_figure(pd.DataFrame({"run": ["a"], "step": [0]}))


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
