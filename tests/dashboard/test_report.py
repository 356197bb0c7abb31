"""The HTML report, read as text: one plotly.js, every run's figures, tables and errors; the empty store."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_runs import write_synthetic_store

from dashboard.data import Catalog
from dashboard.report import build_report, last_values, write_report
from landscape.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(shared_store) -> str:
    catalog = Catalog([shared_store])
    try:
        text, count = build_report(catalog, title="Test report")
    finally:
        catalog.close()
    assert count > 0
    return text


def _figures(text: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'data-(\w+)="([^"]*)"', m)) for m in re.findall(r'<div class="figure" ([^>]*)>', text)]


def test_plotly_js_is_inline_once_and_nothing_is_fetched(report: str) -> None:
    assert report.count("* plotly.js v") == 1  # the library's banner: embedded exactly once
    assert "<script src=" not in report and "<link " not in report
    assert report.startswith("<!DOCTYPE html>") and "<title>Test report</title>" in report


def test_every_probe_of_every_run_has_a_figure(report: str, shared_store) -> None:
    figures = _figures(report)
    with Store(shared_store, readonly=True) as store:
        for run in store.runs():
            probes = set(store.results(run=run)["probe"])
            shown = {p for f in figures if f["run"] == run for p in f["probes"].split()}
            assert probes <= shown, (run, probes - shown)
    names = [f["name"] for f in figures if f["run"] == "sgd"]
    assert names == ["training-curves", "surface", "trajectory", "slice-1d", "interpolation", "hessian-eigenvalues",
                     "hessian-trace", "spectrogram", "hessian-density", "sharpness", "collapse", "cosine", "grokking",
                     "weights-esd", "weights-heatmap", "weights-alpha", "dynamics-noise", "dynamics-connectivity"]
    assert [f for f in figures if f.get("animated")] == [f for f in figures if f["name"] == "trajectory"]
    assert {f["run"] for f in figures} == {"all runs", "sgd", "adam"}


def test_tables_hold_the_metadata_the_last_values_and_the_errors(report: str, shared_store) -> None:
    catalog = Catalog([shared_store])
    try:
        values = last_values(catalog, catalog.ref("adam"))
    finally:
        catalog.close()
    with Store(shared_store, readonly=True) as store:
        frame = store.scalars(run="adam", probe="hessian", keys=["lambda_max"])
    assert values[(values.probe == "hessian") & (values.key == "lambda_max")]["value"].item() == frame.value.iloc[-1]
    assert values[(values.probe == "hessian") & (values.key == "lambda_max")]["step"].item() == 400
    section = report.split('id="run-adam"', 1)[1].split('<section class="run"', 1)[0]
    assert f"<td>lambda_max</td><td class=num>{frame.value.iloc[-1]:.6g}</td>" in section
    assert "<td>label</td><td>synthetic adam</td>" in section and "<td>lr</td><td>0.02</td>" in section
    assert html.escape('{"k":5}', quote=True) in section  # the hessian probe's params
    errors = report.split('id="errors"', 1)[1]
    assert "Lanczos did not converge (synthetic error)" in errors and "<td>sgd</td>" in errors


def test_an_empty_store_gives_a_report_that_says_so(tmp_path: Path) -> None:
    Store(tmp_path / "empty.sqlite").close()
    info = write_report([tmp_path / "empty.sqlite"], tmp_path / "r.html")
    text = info.path.read_text()
    assert info.figures == 0 and info.runs == 0
    assert 'id="no-runs"' in text and "No runs in" in text and "landscape analyze" in text
    assert "plotly.js v" not in text  # nothing to draw, no library


def test_a_run_without_results_is_a_section_that_says_so(tmp_path: Path) -> None:
    path = write_synthetic_store(tmp_path / "s.sqlite", runs=("a",), n_steps=3, grid=5, probes=("metrics",))
    with Store(path) as store:
        store.add_run("later", {"label": "not started"})
    info = write_report([path], tmp_path / "r.html")
    section = info.path.read_text().split('id="run-later"', 1)[1]
    assert "No results to draw for this run yet." in section and "No scalars recorded yet." in section
    assert info.runs == 2 and info.figures == 2  # the overlay and the run's own training curves


def test_the_report_does_not_import_dash(shared_store, tmp_path: Path) -> None:
    code = ("import sys; from dashboard.report import write_report; "
            f"write_report([{str(shared_store)!r}], {str(tmp_path / 'r.html')!r}); "
            "print(sorted(m for m in sys.modules if m == 'dash' or m.startswith('dash.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
