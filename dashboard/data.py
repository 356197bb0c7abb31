"""Read-only, cached access to one or more run stores for the dashboard.

Every read is keyed by the store's change token (``Store.change_token()``), which the page polls: when a
token changes only the index of that store's results is re-read, and from it each (run, probe) gets a
fingerprint — (number of results, newest result id) — so scalars are re-read only for the (run, probe)
pairs that gained rows, and arrays (keyed by result id, which is never reused) are read once.
Runs get display names: the run name with one store, ``store-stem/run`` with several.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landscape.store import Store

Tokens = Sequence[Sequence[int]]

# Probes whose results sit at checkpoints (the ``monitor`` rows are written during training instead).
MONITOR = "monitor"
SUMMARY_KEYS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "lambda_max", "trace", "nc1",
                "sc_fraction", "worst_case")


@dataclass(frozen=True)
class RunRef:
    """A run of one open store, with its display name (``key``) that is unique over all open stores."""

    key: str
    store: int
    run: str


class _LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def _unique_labels(paths: Sequence[Path]) -> list[str]:
    """Short names for the stores: the file stem, made unique with the parent folder or an index."""
    stems = [p.stem for p in paths]
    labels = [f"{p.parent.name}-{p.stem}" if stems.count(p.stem) > 1 and p.parent.name else p.stem for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique


class Catalog:
    """The open stores (read-only) and cached queries over them.

    Methods take ``tokens`` — the change token of every store, as polled by the page — so a cached value
    is reused exactly as long as its store has not changed. ``tokens=None`` reads the current ones.
    """

    def __init__(self, store_paths: Sequence[str | Path] | str | Path) -> None:
        if isinstance(store_paths, (str, Path)):
            store_paths = [store_paths]
        paths = [Path(p) for p in store_paths]
        if not paths:
            raise ValueError("store_paths must name at least one store file; got an empty list.")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(
                    f"store {path} does not exist; pass the path of a store file written by "
                    "`landscape analyze` or the training Monitor."
                )
        self.paths = paths
        self.stores = [Store(p, readonly=True) for p in paths]
        self.labels = _unique_labels(paths)
        self._small = _LRU(4096)    # indexes, scalars, steps, summaries
        self._arrays = _LRU(512)    # arrays of single results (can be large)

    def close(self) -> None:
        for store in self.stores:
            store.close()

    # -- tokens and runs ---------------------------------------------------------------------------
    def tokens(self) -> list[list[int]]:
        """The current change token of every store (JSON-able, for the page to hold)."""
        return [list(store.change_token()) for store in self.stores]

    def _token(self, index: int, tokens: Tokens | None) -> tuple[int, ...]:
        if tokens is None or index >= len(tokens) or tokens[index] is None:
            return tuple(self.stores[index].change_token())
        return tuple(int(v) for v in tokens[index])

    def runs(self, tokens: Tokens | None = None) -> list[RunRef]:
        """Every run of every store, in store order then the store's run order."""
        refs: list[RunRef] = []
        for i, store in enumerate(self.stores):
            names = self._small.get_or_compute(("runs", i, self._token(i, tokens)), store.runs)
            for name in names:
                key = name if len(self.stores) == 1 else f"{self.labels[i]}/{name}"
                refs.append(RunRef(key, i, name))
        return refs

    def ref(self, key: str, tokens: Tokens | None = None) -> RunRef | None:
        return next((r for r in self.runs(tokens) if r.key == key), None)

    def refs(self, keys: Sequence[str] | None, tokens: Tokens | None = None) -> list[RunRef]:
        """The runs named by ``keys`` that exist, in the order given."""
        by_key = {r.key: r for r in self.runs(tokens)}
        return [by_key[k] for k in (keys or []) if k in by_key]

    def meta(self, ref: RunRef, tokens: Tokens | None = None) -> dict[str, Any]:
        return self._small.get_or_compute(("meta", ref, self._token(ref.store, tokens)),
                                          lambda: self.stores[ref.store].run_meta(ref.run))

    def lr(self, ref: RunRef, tokens: Tokens | None = None) -> float | None:
        """The run's learning rate: its metadata ``lr``, else the last ``lr`` the training monitor logged."""
        value = self.meta(ref, tokens).get("lr")
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
        frame = self.scalars([ref], [MONITOR], tokens)
        frame = frame[frame["key"] == "lr"]
        if len(frame):
            last = float(frame.sort_values("step")["value"].iloc[-1])
            return last if last > 0 else None
        return None

    # -- the results index ---------------------------------------------------------------------------
    def _index(self, index: int, tokens: Tokens | None) -> pd.DataFrame:
        """All results of one store (id, run, step, probe, config_hash, valid, message), newest last."""
        def read() -> pd.DataFrame:
            frame = self.stores[index].results()
            return frame.drop(columns=["config_json"]).sort_values("id").reset_index(drop=True)

        return self._small.get_or_compute(("index", index, self._token(index, tokens)), read)

    def _newest(self, ref: RunRef, probe: str | None, tokens: Tokens | None) -> pd.DataFrame:
        """The newest result per (step, probe) of a run (a probe re-run with other params replaces it)."""
        def compute() -> pd.DataFrame:
            frame = self._index(ref.store, tokens)
            frame = frame[frame["run"] == ref.run]
            if probe is not None:
                frame = frame[frame["probe"] == probe]
            return frame.drop_duplicates(["step", "probe"], keep="last").sort_values(["probe", "step"])

        return self._small.get_or_compute(("newest", ref, probe, self._token(ref.store, tokens)), compute)

    def fingerprint(self, ref: RunRef, probe: str, tokens: Tokens | None = None) -> tuple[int, int]:
        """(number of results, newest result id) of one run and probe: changes exactly when its data do."""
        frame = self._index(ref.store, tokens)
        rows = frame[(frame["run"] == ref.run) & (frame["probe"] == probe)]
        return (len(rows), int(rows["id"].max()) if len(rows) else 0)

    def probes(self, ref: RunRef, tokens: Tokens | None = None) -> dict[str, int]:
        """Probe name → number of steps with a result, for one run."""
        frame = self._newest(ref, None, tokens)
        return {str(p): int(n) for p, n in frame.groupby("probe", sort=True).size().items()}

    def has(self, ref: RunRef, probe: str, tokens: Tokens | None = None) -> bool:
        return self.fingerprint(ref, probe, tokens)[0] > 0

    def steps(self, ref: RunRef, probe: str | None = None, tokens: Tokens | None = None) -> list[int]:
        """Steps with a result of ``probe``; without one, the checkpoint steps (every probe but the monitor)."""
        frame = self._newest(ref, probe, tokens)
        if probe is None:
            frame = frame[frame["probe"] != MONITOR]
        return sorted({int(s) for s in frame["step"]})

    def nearest_step(self, ref: RunRef, probe: str, step: int | None, tokens: Tokens | None = None) -> int | None:
        """The step nearest to ``step`` (the earlier one on a tie) that has a result of ``probe``."""
        steps = self.steps(ref, probe, tokens)
        if not steps:
            return None
        if step is None:
            return steps[-1]
        return min(steps, key=lambda s: (abs(s - int(step)), s))

    # -- data ----------------------------------------------------------------------------------------
    def scalars(self, refs: Sequence[RunRef], probes: Sequence[str], tokens: Tokens | None = None) -> pd.DataFrame:
        """Long scalars table (run = display key, step, probe, key, value, valid) of the newest results."""
        parts = []
        for ref in refs:
            for probe in probes:
                fp = self.fingerprint(ref, probe, tokens)
                if fp[0] == 0:
                    continue
                parts.append(self._small.get_or_compute(
                    ("scalars", ref, probe, fp), lambda ref=ref, probe=probe: self._read_scalars(ref, probe, tokens)))
        if not parts:
            return pd.DataFrame({"run": pd.Series(dtype=str), "step": pd.Series(dtype=np.int64),
                                 "probe": pd.Series(dtype=str), "key": pd.Series(dtype=str),
                                 "value": pd.Series(dtype=float), "valid": pd.Series(dtype=bool)})
        return pd.concat(parts, ignore_index=True)

    def _read_scalars(self, ref: RunRef, probe: str, tokens: Tokens | None) -> pd.DataFrame:
        frame = self.stores[ref.store].scalars(run=ref.run, probe=probe)
        newest = self._newest(ref, probe, tokens)[["step", "config_hash"]]
        if frame["config_hash"].nunique() > 1:  # keep only the newest result at each step
            frame = frame.merge(newest, on=["step", "config_hash"], how="inner")
        frame = frame.assign(run=ref.key, valid=frame["valid"].astype(bool))
        return frame[["run", "step", "probe", "key", "value", "valid"]].reset_index(drop=True)

    def arrays(self, ref: RunRef, probe: str, step: int, tokens: Tokens | None = None,
               keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays of the newest ``probe`` result of the run at ``step`` ({} when there is none)."""
        frame = self._newest(ref, probe, tokens)
        rows = frame[frame["step"] == int(step)]
        if not len(rows):
            return {}
        row = rows.iloc[-1]
        rid, chash = int(row["id"]), str(row["config_hash"])
        wanted = tuple(sorted(keys)) if keys else None
        return self._arrays.get_or_compute(
            ("arrays", ref.store, rid, wanted),
            lambda: self.stores[ref.store].arrays(ref.run, int(step), probe, config_hash=chash,
                                                  keys=list(wanted) if wanted else None),
        )

    def errors(self, ref: RunRef, tokens: Tokens | None = None) -> pd.DataFrame:
        return self._small.get_or_compute(("errors", ref, self._token(ref.store, tokens)),
                                          lambda: self.stores[ref.store].errors(run=ref.run))

    def summary(self, ref: RunRef, tokens: Tokens | None = None) -> dict[str, Any]:
        """What a run's card shows: checkpoints, probes present, last values of key scalars, problems."""
        def compute() -> dict[str, Any]:
            steps = self.steps(ref, None, tokens)
            newest = self._newest(ref, None, tokens)
            last: dict[str, tuple[float, int]] = {}
            frame = self.stores[ref.store].scalars(run=ref.run, keys=list(SUMMARY_KEYS))
            if len(frame):
                frame = frame[frame["valid"].astype(bool)].sort_values(["step"], kind="stable")
                # The checkpoint probes' value wins over the monitor's at the same step.
                frame = frame.assign(is_monitor=frame["probe"] == MONITOR).sort_values(
                    ["step", "is_monitor"], ascending=[True, False], kind="stable")
                for key, group in frame.groupby("key", sort=False):
                    row = group.iloc[-1]
                    last[str(key)] = (float(row["value"]), int(row["step"]))
            meta = self.meta(ref, tokens)
            monitor_steps = newest.loc[newest["probe"] == MONITOR, "step"]
            return {
                "key": ref.key, "run": ref.run, "store": str(self.paths[ref.store]),
                "label": meta.get("label"), "lr": meta.get("lr"),
                "checkpoints": len(steps), "first_step": steps[0] if steps else None,
                "last_step": steps[-1] if steps else None,
                "monitor_last_step": int(monitor_steps.max()) if len(monitor_steps) else None,
                "probes": self.probes(ref, tokens), "last": {k: last[k] for k in SUMMARY_KEYS if k in last},
                "errors": len(self.errors(ref, tokens)), "invalid": int((~newest["valid"].astype(bool)).sum()),
            }

        return self._small.get_or_compute(("summary", ref, self._token(ref.store, tokens)), compute)
