"""Static image files of every figure, in the publication style, and the trajectory animation as GIF or MP4.

Images are rendered by Plotly's static export through kaleido (≥ 1), which drives a Chrome or Chromium
installed on the machine: kaleido finds one on the usual paths (``/usr/bin/chromium`` on Debian), and the
environment variable ``BROWSER_PATH`` points it at any other. The figures are those of
:func:`dashboard.gallery.gallery`, restyled by :func:`dashboard.figures.publication` (one style for all).
Animations: each frame of the trajectory animation is rendered to PNG, then assembled with Pillow (GIF) or
imageio-ffmpeg (MP4, H.264; optional).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from dashboard import views
from dashboard.data import Catalog
from dashboard.figures import animation_frames, publication
from dashboard.figures._style import PUBLICATION_SCALE, PUBLICATION_WIDTH
from dashboard.figures.trajectory import MAX_FRAMES
from dashboard.gallery import entries, gallery

IMAGE_FORMATS = ("png", "svg", "pdf")
ANIMATION_FORMATS = ("gif", "mp4")
_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class ExportError(Exception):
    """A static export that cannot run here, with the sentence that says what to install or set."""


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido will use: ``BROWSER_PATH`` when set, else the first one on ``PATH``."""
    given = os.environ.get("BROWSER_PATH")
    if given:
        return given
    return next((found for name in _CHROME_NAMES if (found := shutil.which(name))), None)


def check_renderer() -> None:
    """Raise :class:`ExportError` when kaleido is missing (the browser is checked by the first render)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ExportError("static figures need kaleido ≥ 1: pip install 'landscape[export]'.") from None


def check_video() -> None:
    """Raise :class:`ExportError` when MP4 encoding is not available (imageio-ffmpeg)."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise ExportError("mp4 export needs imageio-ffmpeg (it ships an ffmpeg binary): "
                          "pip install 'landscape[video]'; or use --format gif.") from None


def render(figures: Sequence[go.Figure], paths: Sequence[Path], *, width: int, heights: Sequence[int],
           scale: float) -> None:
    """Write each figure to its path (format from the suffix) in one kaleido session."""
    import plotly.io as pio

    try:
        pio.write_images(list(figures), [str(p) for p in paths], width=width, height=list(heights), scale=scale)
    except Exception as error:  # kaleido reports a missing or broken browser in several ways
        text = f"{type(error).__name__}: {error} {error.__context__ or ''}"
        if "chrome" in text.lower() or "browser" in text.lower():
            said = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            where = find_browser()
            hint = (f"kaleido could not use the browser at {where}" if where else
                    "kaleido needs Chrome or Chromium and found none (Debian: apt-get install chromium)")
            raise ExportError(f"{hint}; set BROWSER_PATH=/path/to/chrome to choose one (kaleido: {said})") from None
        raise
    # On a loaded machine kaleido has been seen to return before every file was written: write those again,
    # one at a time, and fail with the file's name if it still is not there.
    for fig, path, fig_height in zip(figures, paths, heights):
        if not Path(path).is_file() or Path(path).stat().st_size == 0:
            pio.write_image(fig, str(path), width=width, height=fig_height, scale=scale)
            if not Path(path).is_file():
                raise ExportError(f"kaleido did not write {path}; run the export again.")


def _height(fig: go.Figure, height: int | None) -> int:
    return int(height or fig.layout.height or 500)


def _still(fig: go.Figure, animated: bool) -> go.Figure:
    """An animated figure's last frame (the whole path, without the play controls); others as they are."""
    if animated:
        frames = animation_frames(fig)
        if frames:
            return frames[-1]
    return fig


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "run"


def export_images(store_paths: Sequence[str | Path] | str | Path, folder: str | Path, fmt: str = "png", *,
                  width: int = PUBLICATION_WIDTH, height: int | None = None, scale: float = PUBLICATION_SCALE,
                  metric: str = "loss") -> list[Path]:
    """Every figure of the stores as ``folder/<run>/<figure>.<fmt>`` (``all-runs/`` for the overlays).

    ``width`` and ``height`` are in layout pixels (``height`` defaults to each figure's own), ``scale``
    multiplies them for PNG pixels (a PNG is ``width·scale × height·scale``; SVG and PDF, being vector
    formats, keep ``width × height``).
    """
    if fmt not in IMAGE_FORMATS:
        raise ExportError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}.")
    check_renderer()
    catalog = Catalog(store_paths)
    try:
        figures, paths, heights = [], [], []
        for section, entry in entries(gallery(catalog, metric=metric)):
            still = publication(_still(entry.figure, entry.animated))
            target = Path(folder) / _slug(section.key) / f"{entry.name}.{fmt}"
            figures.append(still)
            paths.append(target)
            heights.append(_height(still, height))
    finally:
        catalog.close()
    for target in paths:
        target.parent.mkdir(parents=True, exist_ok=True)
    if figures:
        render(figures, paths, width=width, heights=heights, scale=scale if fmt == "png" else 1)
    return paths


def export_animations(store_paths: Sequence[str | Path] | str | Path, folder: str | Path, fmt: str = "gif", *,
                      width: int = PUBLICATION_WIDTH, height: int | None = None, scale: float = 1.0,
                      metric: str = "loss", fps: float = 4.0, max_frames: int = MAX_FRAMES) -> list[Path]:
    """The trajectory animation of every run that has one, as ``folder/<run>/trajectory.<fmt>``.

    Frames are the animation's (at most ``max_frames``, evenly spaced over the path), rendered to PNG at
    ``width·scale × height·scale`` pixels and shown ``1/fps`` s each; the last frame is held for one second.
    """
    if fmt not in ANIMATION_FORMATS:
        raise ExportError(f"animation format must be one of {', '.join(ANIMATION_FORMATS)}, got {fmt!r}.")
    if fps <= 0:
        raise ExportError(f"fps must be positive, got {fps}.")
    check_renderer()
    if fmt == "mp4":
        check_video()
    catalog = Catalog(store_paths)
    try:
        movies = []
        for ref in catalog.runs():
            view = views.trajectory(catalog, None, ref.key, metric, max_frames=max_frames)
            if view is not None and view.has_data:
                movies.append((ref.key, [publication(f) for f in animation_frames(view.figures[0])]))
    finally:
        catalog.close()
    written = []
    for key, frames in movies:
        target = Path(folder) / _slug(key) / f"trajectory.{fmt}"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame_height = _height(frames[0], height)
        with tempfile.TemporaryDirectory(prefix="landscape-frames-") as tmp:
            pngs = [Path(tmp) / f"frame_{i:04d}.png" for i in range(len(frames))]
            render(frames, pngs, width=width, heights=[frame_height] * len(frames), scale=scale)
            (_write_gif if fmt == "gif" else _write_mp4)(pngs, target, fps)
        written.append(target)
    return written


def _write_gif(pngs: Sequence[Path], target: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in pngs]
    frame_ms = int(round(1000 / fps))
    durations = [frame_ms] * (len(images) - 1) + [max(frame_ms, 1000)]
    palette = [im.quantize(colors=256, method=Image.Quantize.MEDIANCUT) for im in images]
    palette[0].save(target, save_all=True, append_images=palette[1:], duration=durations, loop=0, optimize=False)


def _write_mp4(pngs: Sequence[Path], target: Path, fps: float) -> None:
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    first = Image.open(pngs[0])
    width, height = first.size[0] + first.size[0] % 2, first.size[1] + first.size[1] % 2  # H.264 wants even sizes
    writer = imageio_ffmpeg.write_frames(str(target), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=8)
    writer.send(None)
    hold = max(1, int(round(fps)))  # the last frame stays about a second
    for index, path in enumerate(pngs):
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(Image.open(path).convert("RGB"), (0, 0))
        frame = np.ascontiguousarray(np.asarray(canvas))
        for _ in range(hold if index == len(pngs) - 1 else 1):
            writer.send(frame)
    writer.close()
