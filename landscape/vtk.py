"""Loss surfaces as VTK XML structured grids (``.vts``) for ParaView, with a small writer of our own.

A surface ``z[j, i]`` over the plane coordinates ``x[i]``, ``y[j]`` becomes a grid of ``nx × ny × 1``
points at ``(x[i], y[j], 0)``; every metric (loss, accuracy, …) is a point-data array over them, in VTK's
point order (``x`` fastest, then ``y``), which is the C order of ``z``. The height is left at 0 so the
grid stays the parameter plane; ParaView's *Warp By Scalar* lifts it by any of the arrays. Data are
written as ``ascii`` (every double in its shortest round-trip form) or ``base64`` (VTK's "binary"
inline format: a UInt64 byte count, then the little-endian bytes, base64-encoded; NaN survives).

:func:`export_surfaces` writes every 2-D grid of a store's ``slices`` results, one folder per run, plus a
``.pvd`` collection per plane that orders the checkpoints in time (ParaView plays it as an animation).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

__all__ = ["SURFACE_METRICS", "export_surfaces", "write_pvd", "write_vts"]

SURFACE_METRICS = ("loss", "accuracy", "test_loss", "test_accuracy")
_TYPES = {np.dtype(np.float64): "Float64", np.dtype(np.float32): "Float32", np.dtype(np.int64): "Int64",
          np.dtype(np.int32): "Int32"}


def _data_array(values: np.ndarray, name: str | None, encoding: str, components: int = 1,
                tuples: int | None = None) -> str:
    values = np.ascontiguousarray(values)
    if values.dtype not in _TYPES:
        values = values.astype(np.float64)
    attrs = f'type="{_TYPES[values.dtype]}"' + (f" Name={quoteattr(name)}" if name else "")
    if components > 1:
        attrs += f' NumberOfComponents="{components}"'
    if tuples is not None:
        attrs += f' NumberOfTuples="{tuples}"'
    flat = values.ravel()
    if encoding == "ascii":
        if values.dtype.kind == "f":
            text = " ".join(repr(float(v)) for v in flat)
        else:
            text = " ".join(str(int(v)) for v in flat)
        return f'<DataArray {attrs} format="ascii">{text}</DataArray>'
    raw = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    payload = base64.b64encode(np.uint64(len(raw)).astype("<u8").tobytes() + raw).decode("ascii")
    return f'<DataArray {attrs} format="binary">{payload}</DataArray>'


def write_vts(path: str | Path, x: np.ndarray, y: np.ndarray, point_data: Mapping[str, np.ndarray], *,
              field_data: Mapping[str, float | int] | None = None, encoding: str = "base64") -> Path:
    """Write a structured grid over ``x`` [nx] × ``y`` [ny] with the given point data (each [ny, nx]).

    ``field_data`` holds whole-dataset numbers (e.g. the training step). ``encoding`` is ``"ascii"`` or
    ``"base64"``. Raises ``ValueError`` naming the array whose shape does not fit the grid.
    """
    if encoding not in ("ascii", "base64"):
        raise ValueError(f"encoding must be 'ascii' or 'base64', got {encoding!r}.")
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size < 1 or y.size < 1:
        raise ValueError("a structured grid needs at least one coordinate along x and along y.")
    arrays = {}
    for name, values in point_data.items():
        values = np.asarray(values)
        if values.shape != (y.size, x.size):
            raise ValueError(f"point data {name!r} must have shape (len(y), len(x)) = {(y.size, x.size)}, "
                             f"got {values.shape}.")
        arrays[name] = values.astype(np.float64) if values.dtype.kind != "f" else values
    xx, yy = np.meshgrid(x, y)  # [ny, nx]: x varies fastest in C order, as VTK orders points
    points = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], axis=1)
    extent = f"0 {x.size - 1} 0 {y.size - 1} 0 0"
    active = f' Scalars="{next(iter(arrays))}"' if arrays else ""
    lines = ['<?xml version="1.0"?>',
             '<VTKFile type="StructuredGrid" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
             f'<StructuredGrid WholeExtent="{extent}">']
    if field_data:
        lines.append("<FieldData>")
        for name, value in field_data.items():
            number = np.asarray([value], dtype=np.int64 if float(value).is_integer() else np.float64)
            lines.append(_data_array(number, name, encoding, tuples=1))
        lines.append("</FieldData>")
    lines += [f'<Piece Extent="{extent}">', f"<PointData{active}>"]
    lines += [_data_array(values, name, encoding) for name, values in arrays.items()]
    lines += ["</PointData>", "<Points>", _data_array(points, "Points", encoding, components=3), "</Points>",
              "</Piece>", "</StructuredGrid>", "</VTKFile>", ""]
    target = Path(path)
    target.write_text("\n".join(lines), encoding="ascii")
    return target


def write_pvd(path: str | Path, datasets: list[tuple[int, Path]]) -> Path:
    """A ParaView collection: the files as one time series, the training step as the time value."""
    target = Path(path)
    rows = [f'<DataSet timestep="{int(step)}" part="0" file={quoteattr(file.name)}/>' for step, file in datasets]
    text = "\n".join(['<?xml version="1.0"?>', '<VTKFile type="Collection" version="1.0">', "<Collection>",
                      *rows, "</Collection>", "</VTKFile>", ""])
    target.write_text(text, encoding="ascii")
    return target


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def export_surfaces(store_path: str | Path, folder: str | Path, *, encoding: str = "base64") -> list[Path]:
    """Every 2-D grid of the store's ``slices`` results as ``.vts`` files, one folder per run.

    The plane of directions d₁, d₂ at each checkpoint is ``slices_{step:07d}.vts`` (point data: the
    ``loss``, ``accuracy``, ``test_loss``, ``test_accuracy`` grids present), the trajectory's PCA plane
    ``slices_pca_{step:07d}.vts``; ``slices.pvd`` (and ``slices_pca.pvd``) list them in step order.
    Returns every file written.
    """
    from landscape.store import Store

    out = Path(folder)
    written: list[Path] = []
    with Store(store_path, readonly=True) as store:
        results = store.results(probe="slices")
        results = results[results["valid"] == 1].sort_values("id").drop_duplicates(["run", "step"], keep="last")
        for run in store.runs():
            series: dict[str, list[tuple[int, Path]]] = {"slices": [], "slices_pca": []}
            for row in results[results["run"] == run].sort_values("step").itertuples():
                arrays = store.arrays(run, int(row.step), "slices", config_hash=str(row.config_hash))
                for prefix, name in (("", "slices"), ("pca_", "slices_pca")):
                    if f"{prefix}x" not in arrays or f"{prefix}y" not in arrays:
                        continue
                    data = {m: arrays[f"{prefix}{m}"] for m in SURFACE_METRICS if f"{prefix}{m}" in arrays
                            and np.ndim(arrays[f"{prefix}{m}"]) == 2}
                    if not data:
                        continue
                    run_dir = out / _safe(run)
                    run_dir.mkdir(parents=True, exist_ok=True)
                    path = write_vts(run_dir / f"{name}_{int(row.step):07d}.vts", arrays[f"{prefix}x"],
                                     arrays[f"{prefix}y"], data, field_data={"step": int(row.step)}, encoding=encoding)
                    series[name].append((int(row.step), path))
                    written.append(path)
            for name, datasets in series.items():
                if datasets:
                    written.append(write_pvd(datasets[0][1].parent / f"{name}.pvd", datasets))
    return written
