"""Per-run scalar series picked out of the long scalars table that the figures over steps read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def clean_scalars(scalars: pd.DataFrame | None) -> pd.DataFrame:
    """The scalars table without invalid results, checked for the columns every figure needs."""
    if scalars is None:
        return pd.DataFrame(columns=["run", "step", "probe", "key", "value"])
    missing = {"run", "step", "key", "value"} - set(scalars.columns)
    if missing:
        raise ValueError(
            f"scalars must be a long table with columns run, step, key, value (probe optional); "
            f"missing {', '.join(sorted(missing))}."
        )
    frame = scalars
    if "valid" in frame.columns:
        frame = frame[frame["valid"].astype(bool)]
    if "probe" not in frame.columns:
        frame = frame.assign(probe="")
    return frame


class RunSeries:
    """Per-run scalar series of a long table, chosen from the densest source probe for each key."""

    def __init__(self, scalars: pd.DataFrame | None, probes: Sequence[str] | None = None) -> None:
        frame = clean_scalars(scalars)
        if probes is not None and len(frame):
            frame = frame[frame["probe"].isin(list(probes))]
        self.runs: list[str] = [str(r) for r in pd.unique(frame["run"])] if len(frame) else []
        self._probe_order = list(probes or [])
        self._groups: dict[tuple[str, str], list[tuple[str, pd.DataFrame]]] = {}
        if len(frame):
            for (run, key, probe), group in frame.groupby(["run", "key", "probe"], sort=False):
                self._groups.setdefault((str(run), str(key)), []).append((str(probe), group))

    def keys(self, run: str) -> set[str]:
        return {key for (r, key) in self._groups if r == run}

    def get(self, run: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Steps and values of ``key`` for ``run`` (sorted by step), from the probe with the most rows."""
        candidates = self._groups.get((run, key))
        if not candidates:
            return None

        def rank(item: tuple[str, pd.DataFrame]) -> tuple[int, int]:
            probe, group = item
            order = self._probe_order.index(probe) if probe in self._probe_order else len(self._probe_order)
            return (-len(group), order)

        _, group = min(candidates, key=rank)
        group = group.sort_values("step").drop_duplicates("step", keep="last")
        return group["step"].to_numpy(dtype=np.int64), group["value"].to_numpy(dtype=float)
