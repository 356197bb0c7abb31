"""Static exports through kaleido and Chromium: images of the stated size, GIF and MP4 of the trajectory.

These need kaleido ≥ 1 and a Chrome/Chromium (Debian's `chromium`); without them the tests are skipped,
except under CI, where `.ci/run` installs both and a missing one is a failure.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import write_synthetic_store

from dashboard import static


@pytest.fixture(scope="module", autouse=True)
def renderer() -> None:
    missing = []
    try:
        static.check_renderer()
    except static.ExportError as error:
        missing.append(str(error))
    if static.find_browser() is None:
        missing.append("no Chrome/Chromium found (Debian package `chromium`, or set BROWSER_PATH)")
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("; ".join(missing))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run, four checkpoints, the metrics and slices probes: five figures, one of them animated."""
    return write_synthetic_store(tmp_path_factory.mktemp("static") / "s.sqlite", runs=("sgd",), n_steps=4, grid=5,
                                 probes=("metrics", "slices"))


def _not_blank(image) -> bool:
    pixels = np.asarray(image.convert("L"), dtype=float)
    return pixels.std() > 5.0 and (pixels < 128).mean() > 0.001  # some dark ink on the white page


def test_png_export_writes_every_figure_at_the_stated_size(store: Path, tmp_path: Path) -> None:
    from PIL import Image

    written = static.export_images(store, tmp_path, "png", width=640, height=400, scale=1)
    assert sorted(p.name for p in written) == ["interpolation.png", "slice-1d.png", "surface.png",
                                               "training-curves.png", "trajectory.png"]
    assert {p.parent for p in written} == {tmp_path / "sgd"}
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (640, 400), path.name
            assert _not_blank(image), path.name


def test_default_size_is_the_figures_own_height_at_the_publication_scale(tmp_path: Path) -> None:
    from PIL import Image

    path = write_synthetic_store(tmp_path / "m.sqlite", runs=("a",), n_steps=3, probes=("metrics",))
    (written,) = static.export_images(path, tmp_path / "out", "png", width=500)
    with Image.open(written) as image:
        assert image.size == (500 * static.PUBLICATION_SCALE, 420 * static.PUBLICATION_SCALE)  # 420: the figure's height


def test_svg_and_pdf_exports_are_well_formed(tmp_path: Path) -> None:
    path = write_synthetic_store(tmp_path / "m.sqlite", runs=("a",), n_steps=3, probes=("metrics",))
    (svg,) = static.export_images(path, tmp_path / "svg", "svg", width=600, height=300)
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and root.get("width") == "600" and root.get("height") == "300"
    assert "training step" in svg.read_text()  # text stays text
    (pdf,) = static.export_images(path, tmp_path / "pdf", "pdf", width=600, height=300)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_gif_of_the_trajectory_has_one_frame_per_checkpoint(store: Path, tmp_path: Path) -> None:
    from PIL import Image

    (gif,) = static.export_animations(store, tmp_path, "gif", width=320, height=240, fps=5)
    assert gif == tmp_path / "sgd" / "trajectory.gif"
    with Image.open(gif) as image:
        assert image.size == (320, 240) and image.n_frames == 4
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
            assert _not_blank(image)
    assert durations == [200, 200, 200, 1000]  # 1/fps each, the last held a second


def test_mp4_of_the_trajectory_decodes_to_its_frames(store: Path, tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg") if not os.environ.get("CI") else __import__("imageio_ffmpeg")
    (mp4,) = static.export_animations(store, tmp_path, "mp4", width=321, height=240, fps=5)
    reader = imageio_ffmpeg.read_frames(str(mp4))
    meta = next(reader)
    frames = list(reader)
    assert meta["size"] == (322, 240) and meta["fps"] == 5  # padded to even sizes for H.264
    assert len(frames) == 3 + 5  # four frames, the last held a second


def test_missing_renderer_or_encoder_is_one_sentence_naming_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                                       store: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)
    with pytest.raises(static.ExportError, match=r"static figures need kaleido ≥ 1: pip install 'landscape\[export\]'"):
        static.export_images(store, tmp_path, "png")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(static.ExportError, match=r"mp4 export needs imageio-ffmpeg .*landscape\[video\]"):
        static.check_video()
    with pytest.raises(static.ExportError, match="image format must be one of png, svg, pdf"):
        static.export_images(store, tmp_path, "gif")


def test_a_browser_kaleido_cannot_use_is_named_with_the_variable_to_set(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    import plotly.graph_objects as go

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    with pytest.raises(static.ExportError, match=r"could not use the browser at .*no-such-chrome; set BROWSER_PATH="):
        static.render([go.Figure(go.Scatter(x=[0], y=[0]))], [tmp_path / "x.png"], width=100, heights=[100], scale=1)
    assert not (tmp_path / "x.png").exists()
