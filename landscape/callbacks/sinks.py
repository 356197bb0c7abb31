"""Sinks: where the :class:`~landscape.callbacks.monitor.Monitor` sends each record besides the run store.

A sink receives every scalar the monitor records as ``(name, value, step)``, named ``"{probe}/{key}"``
(``monitor/train_loss``, ``hessian/lambda_max``), and the arrays that are distributions as histograms
(:data:`HISTOGRAMS`: the Hessian spectral density, the grokking logit-gap histogram). Two are built in:
:class:`TensorBoardSink` (``torch.utils.tensorboard``) and :class:`WandbSink` (Weights & Biases, offline
by default). Any object with a ``scalar(name, value, step)`` method works too; ``histogram``, ``flush``
and ``close`` are optional.

A sink never stops training: :class:`SinkSet` catches whatever a sink raises, warns once per sink and
keeps calling it (so a sink that recovers gets the later records). :func:`export_tensorboard` writes the
scalars of an existing store as TensorBoard event files, through the same sink, so the tags match.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HISTOGRAMS", "Histogram", "Sink", "SinkSet", "TensorBoardSink", "WandbSink", "export_tensorboard",
           "histograms", "named_scalars"]

# probe -> (histogram name, key of the bin positions, key of the values, how the values read).
# "edges": bin edges [B+1] and counts [B]; "grid": a density sampled on grid points [G] (bins are centred
# on the points, and the mass of a bin is density × bin width).
HISTOGRAMS: dict[str, tuple[str, str, str, str]] = {
    "hessian": ("spectral_density", "density_grid", "density_curve", "grid"),
    "grokking": ("logit_gap", "logit_gap_edges", "logit_gap_hist", "edges"),
}


@dataclass(frozen=True)
class Histogram:
    """A histogram as bin edges [B+1] and the count (or probability mass) of each bin [B]."""

    name: str
    edges: np.ndarray
    counts: np.ndarray

    def moments(self) -> tuple[float, float, float]:
        """(total count, Σ count·centre, Σ count·centre²): what TensorBoard stores beside the buckets."""
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        return float(self.counts.sum()), float(self.counts @ centres), float(self.counts @ centres ** 2)


def _grid_edges(grid: np.ndarray) -> np.ndarray:
    """Bin edges centred on the grid points: midpoints inside, half a spacing beyond each end."""
    mids = 0.5 * (grid[1:] + grid[:-1])
    return np.concatenate([[grid[0] - (mids[0] - grid[0])], mids, [grid[-1] + (grid[-1] - mids[-1])]])


def histograms(probe: str, arrays: Mapping[str, np.ndarray]) -> list[Histogram]:
    """The histograms among one result's arrays (empty when the probe stores none, or they are malformed)."""
    if probe not in HISTOGRAMS:
        return []
    name, where_key, values_key, kind = HISTOGRAMS[probe]
    if where_key not in arrays or values_key not in arrays:
        return []
    where = np.asarray(arrays[where_key], dtype=float).ravel()
    values = np.asarray(arrays[values_key], dtype=float).ravel()
    if kind == "grid":
        if where.size < 2 or where.size != values.size:
            return []
        edges = _grid_edges(where)
        counts = values * np.diff(edges)
    else:
        if where.size != values.size + 1 or values.size == 0:
            return []
        edges, counts = where, values
    if not (np.all(np.isfinite(edges)) and np.all(np.isfinite(counts)) and np.all(np.diff(edges) > 0)):
        return []
    return [Histogram(name, edges, counts)]


def named_scalars(probe: str, scalars: Mapping[str, float]) -> dict[str, float]:
    """The finite scalars of one record, named ``"{probe}/{key}"`` as every sink receives them."""
    return {f"{probe}/{k}": float(v) for k, v in scalars.items() if math.isfinite(float(v))}


class Sink:
    """Base class of a sink: override :meth:`scalar` (and :meth:`histogram`, :meth:`flush`, :meth:`close`)."""

    def scalar(self, name: str, value: float, step: int) -> None:
        raise NotImplementedError

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Several scalars of one step; sinks that can write them at once override this."""
        for name, value in values.items():
            self.scalar(name, value, step)

    def histogram(self, name: str, histogram: Histogram, step: int) -> None:
        """A distribution at ``step``; sinks without histograms ignore it."""

    def flush(self) -> None:
        """Make what was sent so far durable (e.g. at the end of training)."""

    def close(self) -> None:
        """Flush and release the sink's files or processes."""


class TensorBoardSink(Sink):
    """Scalars and histograms as TensorBoard event files in ``logdir`` (``torch.utils.tensorboard``).

    Extra keyword arguments go to ``SummaryWriter`` (e.g. ``flush_secs``). Scalars are stored by TensorBoard
    as 32-bit floats.
    """

    def __init__(self, logdir: str | Path, **writer_kwargs: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoardSink needs the tensorboard package; install it with: "
                              "pip install landscape[tensorboard]") from None
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir), **writer_kwargs)

    def scalar(self, name: str, value: float, step: int) -> None:
        self.writer.add_scalar(name, float(value), global_step=int(step))

    def histogram(self, name: str, histogram: Histogram, step: int) -> None:
        num, total, squares = histogram.moments()
        self.writer.add_histogram_raw(
            name, min=float(histogram.edges[0]), max=float(histogram.edges[-1]), num=num, sum=total,
            sum_squares=squares, bucket_limits=histogram.edges[1:], bucket_counts=histogram.counts,
            global_step=int(step),
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink(Sink):
    """Scalars and histograms in a Weights & Biases run; ``mode="offline"`` (the default) needs no network
    and writes the run under ``dir`` for a later ``wandb sync``.

    Every record carries a ``step`` field that all the logged keys are plotted against, so records of a
    step already passed (a probe logged after the monitor scalars of a later step) are kept rather than
    dropped. Pass ``run=`` to log into a run you started yourself (it is not finished on :meth:`close`).
    """

    def __init__(self, project: str | None = None, *, mode: str = "offline", name: str | None = None,
                 dir: str | Path | None = None, run: Any = None, **init_kwargs: Any) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError("WandbSink needs the wandb package; install it with: pip install landscape[wandb]") from None
        self._wandb = wandb
        self._owns_run = run is None
        if run is None:
            settings = init_kwargs.pop("settings", None) or wandb.Settings(
                silent=True, x_disable_stats=True, disable_git=True, disable_code=True, console="off")
            run = wandb.init(project=project, mode=mode, name=name, dir=None if dir is None else str(dir),
                             settings=settings, **init_kwargs)
        self.run = run
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def scalar(self, name: str, value: float, step: int) -> None:
        self.scalars({name: value}, step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({**{k: float(v) for k, v in values.items()}, "step": int(step)})

    def histogram(self, name: str, histogram: Histogram, step: int) -> None:
        counts = np.asarray(histogram.counts, dtype=float)
        self.run.log({name: self._wandb.Histogram(np_histogram=(counts, histogram.edges)), "step": int(step)})

    def close(self) -> None:
        if self._owns_run:
            self.run.finish()


class SinkSet:
    """The sinks of one monitor: sends each record to every sink; a failing sink warns once and training goes on."""

    def __init__(self, sinks: Iterable[Any] | None) -> None:
        self.sinks: list[Any] = list(sinks or [])
        for sink in self.sinks:
            if not callable(getattr(sink, "scalar", None)):
                raise TypeError(f"a sink needs a scalar(name, value, step) method; {type(sink).__name__} has none.")
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.sinks)

    def _call(self, sink: Any, what: str, *args: Any) -> None:
        method = getattr(sink, what, None)
        if method is None:
            return
        try:
            method(*args)
        except Exception as error:  # a sink must never stop training
            if id(sink) not in self._warned:
                self._warned.add(id(sink))
                warnings.warn(f"sink {type(sink).__name__} failed in {what}() ({type(error).__name__}: {error}); "
                              "training continues, further failures of this sink are not reported.",
                              RuntimeWarning, stacklevel=4)

    def record(self, probe: str, scalars: Mapping[str, float], step: int,
               arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """One record: its finite scalars as ``"{probe}/{key}"`` and its histograms, to every sink."""
        if not self.sinks:
            return
        named = named_scalars(probe, scalars)
        found = histograms(probe, arrays or {})
        for sink in self.sinks:
            if named:
                if callable(getattr(sink, "scalars", None)):
                    self._call(sink, "scalars", named, int(step))
                else:
                    for name, value in named.items():
                        self._call(sink, "scalar", name, value, int(step))
            for histogram in found:
                self._call(sink, "histogram", f"{probe}/{histogram.name}", histogram, int(step))

    def flush(self) -> None:
        for sink in self.sinks:
            self._call(sink, "flush")

    def close(self) -> None:
        for sink in self.sinks:
            self._call(sink, "close")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def export_tensorboard(store_path: str | Path, folder: str | Path, runs: Sequence[str] | None = None) -> list[Path]:
    """Write the scalars (and histograms) of a store as TensorBoard event files, one subfolder per run.

    For every (run, step, probe) the newest valid result is written, its scalars tagged ``"{probe}/{key}"``
    exactly as a :class:`TensorBoardSink` on the training :class:`Monitor` tags them. Returns the run folders.
    """
    from landscape.store import Store

    out = Path(folder)
    written: list[Path] = []
    with Store(store_path, readonly=True) as store:
        results = store.results()
        for run in (list(runs) if runs is not None else store.runs()):
            rows = results[(results["run"] == run) & (results["valid"] == 1)].sort_values("id")
            rows = rows.drop_duplicates(["step", "probe"], keep="last")
            if rows.empty:
                continue
            scalars = store.scalars(run=run).merge(rows[["step", "probe", "config_hash"]],
                                                   on=["step", "probe", "config_hash"])
            sink = TensorBoardSink(out / _safe(run))
            by_result = {key: group for key, group in scalars.groupby(["step", "probe"], sort=False)}
            for row in rows.sort_values(["step", "probe"]).itertuples():
                step, probe = int(row.step), str(row.probe)
                group = by_result.get((step, probe))
                values = dict(zip(group["key"], group["value"])) if group is not None else {}
                arrays = {}
                if probe in HISTOGRAMS:
                    keys = list(HISTOGRAMS[probe][1:3])
                    arrays = store.arrays(run, step, probe, config_hash=str(row.config_hash), keys=keys)
                sink.scalars(named_scalars(probe, values), step)
                for histogram in histograms(probe, arrays):
                    sink.histogram(f"{probe}/{histogram.name}", histogram, step)
            sink.close()
            written.append(sink.logdir)
    return written
