"""`landscape report` and `landscape export --figures / --tensorboard`: outputs, and one clear line for bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from landscape.cli import main
from landscape.store import Store


@pytest.fixture(scope="module")
def store(synthetic_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_runs.write_synthetic_store(tmp_path_factory.mktemp("cli") / "runs.sqlite", runs=("sgd",),
                                                n_steps=3, grid=5, probes=("metrics", "slices"))


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    Store(tmp_path / "empty.sqlite").close()
    return tmp_path / "empty.sqlite"


def _error(capsys, argv: list[str]) -> str:
    """Run the command, expect exit 2, and return its one line of error."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_report_writes_one_file_and_says_what_it_holds(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(store), "-o", str(out), "--title", "Run 12"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out} (") and "5 figure(s) of 1 run(s)" in said
    text = out.read_text()
    assert "<title>Run 12</title>" in text and text.count("* plotly.js v") == 1


def test_report_of_an_empty_store_says_so(empty: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(empty), "-o", str(tmp_path / "r.html")]) == 0
    assert "0 figure(s) of 0 run(s)" in capsys.readouterr().out
    assert "No runs in" in (tmp_path / "r.html").read_text()


def test_an_unwritable_report_path_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    missing_store = str(tmp_path / "nope.sqlite")  # the output is checked first: no store is opened
    assert _error(capsys, ["report", missing_store, "-o", "/sys/report.html"]).startswith(
        "error: cannot write the report to /sys/report.html: ")
    assert _error(capsys, ["report", missing_store, "-o", str(tmp_path / "no" / "r.html")]) == (
        f"error: cannot write the report to {tmp_path / 'no' / 'r.html'}: folder {tmp_path / 'no'} does not exist.")
    assert "it is a folder" in _error(capsys, ["report", missing_store, "-o", str(tmp_path)])
    assert _error(capsys, ["report", missing_store, "-o", str(tmp_path / "r.html")]) == (
        f"error: store {missing_store} does not exist.")
    assert not (tmp_path / "r.html").exists()


def test_export_options_that_do_not_fit_are_one_sentence(store: Path, empty: Path, tmp_path: Path, capsys) -> None:
    assert "png is a figure format; give --figures DIR" in _error(capsys, ["export", str(store), "--format", "png"])
    assert "csv is a table format; with --figures give one of png" in _error(
        capsys, ["export", str(store), "--figures", str(tmp_path / "f"), "--format", "csv"])
    assert "one of --figures DIR and --tensorboard DIR" in _error(
        capsys, ["export", str(store), "--figures", "a", "--tensorboard", "b"])
    for flag in ("--figures", "--tensorboard"):
        assert f"store {empty} has no results to" in _error(capsys, ["export", str(empty), flag, str(tmp_path / "x")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "f").exists()
    assert "cannot write the figures to /sys/figures" in _error(capsys, ["export", str(store), "--figures", "/sys/figures"])


def test_export_tensorboard_and_vtk_from_the_command_line(store: Path, tmp_path: Path, capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["export", str(store), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "of 1 run(s)" in capsys.readouterr().out
    events = EventAccumulator(str(tmp_path / "tb" / "sgd"))
    events.Reload()
    with Store(store, readonly=True) as opened:
        losses = opened.scalars(run="sgd", probe="metrics", keys=["train_loss"])
    assert [(e.step, np.float32(e.value)) for e in events.Scalars("metrics/train_loss")] == [
        (int(s), np.float32(v)) for s, v in zip(losses.step, losses.value)]
    assert main(["export", str(store), "--figures", str(tmp_path / "vtk"), "--format", "vtk"]) == 0
    assert "wrote 6 vtk file(s)" in capsys.readouterr().out  # 3 planes, 1 PCA plane, 2 collections
    assert sorted(p.name for p in (tmp_path / "vtk" / "sgd").iterdir())[:2] == ["slices.pvd", "slices_0000000.vts"]


def test_export_png_from_the_command_line_at_the_stated_size(store: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from dashboard.static import find_browser

    if find_browser() is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("PNG export needs Chrome/Chromium (Debian `chromium`).")
    args = ["export", str(store), "--figures", str(tmp_path / "png"), "--width", "400", "--height", "300", "--scale", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"wrote 5 png file(s) to {tmp_path / 'png'}")
    for path in (tmp_path / "png" / "sgd").iterdir():
        with Image.open(path) as image:
            assert image.size == (400, 300), path.name
