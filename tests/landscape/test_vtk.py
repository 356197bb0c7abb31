"""Tests for landscape.vtk: structured grids parse back (xml.etree) to exactly the grids written."""

from __future__ import annotations

import base64
import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from landscape.store import Store
from landscape.vtk import export_surfaces, write_vts

ROOT = Path(__file__).resolve().parents[2]
_DTYPES = {"Float64": "<f8", "Float32": "<f4", "Int64": "<i8", "Int32": "<i4"}


def _values(element: ET.Element) -> np.ndarray:
    """A DataArray's values, from ascii text or VTK's base64 'binary' (UInt64 byte count, then the bytes)."""
    dtype = np.dtype(_DTYPES[element.get("type")])
    if element.get("format") == "ascii":
        return np.array(element.text.split(), dtype=dtype)
    raw = base64.b64decode(element.text)
    count = int(np.frombuffer(raw[:8], dtype="<u8")[0])
    assert count == len(raw) - 8
    return np.frombuffer(raw[8:], dtype=dtype)


def read_vts(path: Path) -> dict:
    root = ET.parse(path).getroot()
    assert root.get("type") == "StructuredGrid" and root.get("header_type") == "UInt64"
    grid = root.find("StructuredGrid")
    extent = [int(v) for v in grid.get("WholeExtent").split()]
    nx, ny = extent[1] + 1, extent[3] + 1
    points = _values(grid.find("Piece/Points/DataArray")).reshape(ny, nx, 3)
    data = {a.get("Name"): _values(a).reshape(ny, nx) for a in grid.findall("Piece/PointData/DataArray")}
    fields = {a.get("Name"): _values(a)[0] for a in grid.findall("FieldData/DataArray")}
    return {"x": points[0, :, 0], "y": points[:, 0, 1], "z": points[..., 2], "data": data, "fields": fields,
            "active": grid.find("Piece/PointData").get("Scalars")}


@pytest.mark.parametrize("encoding", ["ascii", "base64"])
def test_a_grid_parses_back_exactly_with_x_varying_fastest(tmp_path: Path, encoding: str) -> None:
    x = np.array([-1.0, 0.0, 0.5, 2.0])
    y = np.array([0.1, 0.2, 0.7])
    loss = np.arange(12, dtype=float).reshape(3, 4) / 7.0  # loss[j, i] at (x[i], y[j])
    accuracy = np.linspace(0, 1, 12).reshape(3, 4)
    if encoding == "base64":
        loss[1, 2] = np.nan  # survives the binary encoding
    path = write_vts(tmp_path / "g.vts", x, y, {"loss": loss, "accuracy": accuracy}, field_data={"step": 300},
                     encoding=encoding)
    back = read_vts(path)
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["y"], y)
    assert not back["z"].any()
    np.testing.assert_array_equal(back["data"]["loss"], loss)
    np.testing.assert_array_equal(back["data"]["accuracy"], accuracy)
    assert back["fields"] == {"step": 300} and back["active"] == "loss"


def test_bad_grids_are_refused_with_the_array_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"point data 'loss' must have shape \(len\(y\), len\(x\)\) = \(2, 3\), got \(3, 2\)"):
        write_vts(tmp_path / "g.vts", np.zeros(3), np.zeros(2), {"loss": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="encoding must be 'ascii' or 'base64'"):
        write_vts(tmp_path / "g.vts", np.zeros(3), np.zeros(2), {}, encoding="hex")


def test_export_surfaces_writes_every_slices_grid_of_every_run(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("synthetic_runs", ROOT / "tests" / "dashboard" / "synthetic_runs.py")
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)
    store_path = synthetic.write_synthetic_store(tmp_path / "s.sqlite", n_steps=3, grid=5, probes=("slices", "metrics"))
    written = export_surfaces(store_path, tmp_path / "vtk")
    names = sorted(p.relative_to(tmp_path / "vtk").as_posix() for p in written)
    for run in ("sgd", "adam"):
        assert {f"{run}/slices_{s:07d}.vts" for s in (0, 100, 200)} | {f"{run}/slices.pvd", f"{run}/slices_pca.pvd",
                                                                       f"{run}/slices_pca_0000200.vts"} <= set(names)
    assert len(names) == 2 * 6
    with Store(store_path, readonly=True) as store:
        for step in (0, 100, 200):
            arrays = store.arrays("adam", step, "slices")
            back = read_vts(tmp_path / "vtk" / "adam" / f"slices_{step:07d}.vts")
            np.testing.assert_array_equal(back["x"], arrays["x"])
            np.testing.assert_array_equal(back["y"], arrays["y"])
            assert set(back["data"]) == {"loss", "accuracy", "test_loss", "test_accuracy"}
            for key, values in back["data"].items():
                np.testing.assert_array_equal(values, arrays[key])
            assert back["fields"]["step"] == step
        pca = read_vts(tmp_path / "vtk" / "adam" / "slices_pca_0000200.vts")
        arrays = store.arrays("adam", 200, "slices")
        np.testing.assert_array_equal(pca["data"]["loss"], arrays["pca_loss"])
        np.testing.assert_array_equal(pca["x"], arrays["pca_x"])
    collection = ET.parse(tmp_path / "vtk" / "sgd" / "slices.pvd").getroot()
    assert [(d.get("timestep"), d.get("file")) for d in collection.iter("DataSet")] == [
        ("0", "slices_0000000.vts"), ("100", "slices_0000100.vts"), ("200", "slices_0000200.vts")]
