"""Small hand-made inputs and readers shared by the figure tests."""

from __future__ import annotations

import pandas as pd


def long_frame(rows: list[tuple]) -> pd.DataFrame:
    """A scalars table from (run, step, probe, key, value) tuples, all valid."""
    frame = pd.DataFrame(rows, columns=["run", "step", "probe", "key", "value"])
    return frame.assign(valid=True)


def series_rows(run: str, probe: str, key: str, steps, values) -> list[tuple]:
    return [(run, int(s), probe, key, float(v)) for s, v in zip(steps, values)]


def annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]
