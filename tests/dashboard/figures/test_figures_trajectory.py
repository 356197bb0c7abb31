"""The trajectory animation: frames add the path point by point; stills for GIF/MP4; thinning of long paths."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard import figures
from dashboard.figures.trajectory import MAX_SLIDER_LABELS, frame_indices


def _arrays(n: int = 6) -> dict[str, np.ndarray]:
    x = np.linspace(-2.0, 2.0, 7)
    y = np.linspace(-1.0, 1.0, 5)
    xx, yy = np.meshgrid(x, y)
    angle = np.linspace(0, 2 * np.pi, n)
    return {"pca_x": x, "pca_y": y, "pca_loss": 0.1 + xx ** 2 + yy ** 2, "pca_accuracy": 1 / (1 + xx ** 2),
            "path_x": 1.5 * np.cos(angle), "path_y": 0.8 * np.sin(angle),
            "path_steps": np.arange(n, dtype=np.int64) * 250, "explained_variance": np.array([0.6, 0.3])}


def test_each_frame_holds_the_path_up_to_its_checkpoint_and_marks_it() -> None:
    arrays = _arrays(6)
    fig = figures.trajectory_animation_figure(arrays)
    assert [f.name for f in fig.frames] == ["0", "250", "500", "750", "1000", "1250"]
    for k, frame in enumerate(fig.frames):
        assert list(frame.traces) == [2, 3]
        np.testing.assert_array_equal(frame.data[0].x, arrays["path_x"][:k + 1])
        np.testing.assert_array_equal(frame.data[0].y, arrays["path_y"][:k + 1])
        assert (frame.data[1].x[0], frame.data[1].y[0]) == (arrays["path_x"][k], arrays["path_y"][k])
        assert frame.layout.annotations[0].text == f"step {int(arrays['path_steps'][k]):,}"
    # the figure opens on the whole path, the contour is log10 of the loss, both axes name the components
    np.testing.assert_array_equal(fig.data[2].x, arrays["path_x"])
    np.testing.assert_allclose(fig.data[0].z, np.log10(arrays["pca_loss"]), rtol=0, atol=0)
    assert fig.layout.xaxis.title.text == "PC1 (60.0% of variance)" and fig.layout.yaxis.title.text.startswith("PC2")
    play, pause = fig.layout.updatemenus[0].buttons
    assert play.args[0] is None and play.args[1]["fromcurrent"] is False and list(pause.args[0]) == [None]
    slider = fig.layout.sliders[0]
    assert slider.active == 5 and [list(s.args[0]) for s in slider.steps] == [[f.name] for f in fig.frames]


def test_long_paths_are_thinned_and_slider_labels_stay_few() -> None:
    assert frame_indices(5, 60) == [0, 1, 2, 3, 4]
    thinned = frame_indices(200, 60)
    assert len(thinned) == 60 and thinned[0] == 0 and thinned[-1] == 199
    fig = figures.trajectory_animation_figure(_arrays(200))
    assert len(fig.frames) == 60
    labels = [s.label for s in fig.layout.sliders[0].steps]
    shown = [label for label in labels if label]
    assert len(shown) == MAX_SLIDER_LABELS and labels[0] == "0" and labels[-1] == "49.8k"
    assert len(fig.data[1].x) == 200  # every point is still drawn (the faint whole path)


def test_stills_are_the_frames_without_the_controls() -> None:
    fig = figures.trajectory_animation_figure(_arrays(4), metric="accuracy")
    stills = figures.animation_frames(fig)
    assert len(stills) == 4
    for k, still in enumerate(stills):
        assert not still.layout.updatemenus and not still.layout.sliders and not still.frames
        assert len(still.data[2].x) == k + 1
        assert still.layout.annotations[0].text == f"step {250 * k:,}"
        np.testing.assert_array_equal(still.data[0].z, _arrays(4)["pca_accuracy"])  # accuracy stays linear


def test_missing_or_bad_arrays() -> None:
    empty = figures.trajectory_animation_figure({"x": np.zeros(3)})
    assert len(empty.data) == 0 and "at least three" in empty.layout.annotations[0].text
    bad = _arrays(4)
    bad["path_steps"] = bad["path_steps"][:2]
    with pytest.raises(ValueError, match="path_x, path_y and path_steps must be non-empty and of one length"):
        figures.trajectory_animation_figure(bad)
    with pytest.raises(ValueError, match="metric must be one of"):
        figures.trajectory_animation_figure(_arrays(), metric="nope")
