"""Monitor records finished together: measured at their step, reduced and fetched a batch at a time.

On a fast training loop (a step of a millisecond or less) most of a record's cost is the launch of a dozen
small kernels and the device-to-host transfer, and the training code after it runs slower for a while
(its caches cooled). So, while records arrive faster than the writer's ``linger``, the monitor only takes
what must be read at the step (the weight and gradient norms, a copy of the logits and targets: a few
kernels) and :class:`PendingRecords` finishes the records a batch at a time — their logit sums in one
stacked computation, everything in one transfer (:func:`~landscape.callbacks.scalars.gather_floats`).

A batch is finished when it holds ``max_records`` records, when its oldest has waited ``linger`` seconds
(checked at every training step, so a reader stays about ``linger`` behind), before a probe runs, and at
``flush``, ``close`` and interpreter exit. Records that arrive more than ``linger`` apart are finished at
once, as they come. What ``Monitor.step`` returns (:class:`RecordScalars`) is finished the moment it is
read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from landscape.callbacks.scalars import Gather, gather_floats

__all__ = ["PendingRecords", "RecordScalars"]


class RecordScalars(Mapping[str, float]):
    """The scalars of one monitor record, a read-only mapping (``dict(row)`` makes a plain dict). Reading
    it finishes it (with the records pending beside it); a record whose measurement failed reads as empty
    (the failure is recorded in the store)."""

    __slots__ = ("_finish", "_values")

    def __init__(self, finish: Callable[[], None]) -> None:
        self._values: dict[str, float] | None = None
        self._finish: Callable[[], None] | None = finish

    def _set(self, values: dict[str, float]) -> None:
        self._values, self._finish = values, None

    def _get(self) -> dict[str, float]:
        if self._values is None and self._finish is not None:
            self._finish()
        return self._values if self._values is not None else {}

    def __getitem__(self, key: str) -> float:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


class PendingRecords:
    """Records waiting to be finished together.

    ``emit(step, scalars)`` receives each finished record, in step order; ``fail(step, message)`` each one
    whose measurement raised (the others of its batch are still finished). ``linger`` (seconds) bounds how
    long a record waits; 0 finishes every record at once.
    """

    def __init__(self, emit: Callable[[int, dict[str, float]], None], fail: Callable[[int, str], None], *,
                 linger: float, max_records: int = 32) -> None:
        if not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records must be a positive integer, got {max_records!r}.")
        self._emit, self._fail = emit, fail
        self._linger = float(linger)
        self._max_records = max_records
        self._records: list[tuple[int, Gather, RecordScalars]] = []
        self._oldest = 0.0
        self._last = float("-inf")

    def __len__(self) -> int:
        return len(self._records)

    def add(self, step: int, gather: Gather, *, now: bool = False) -> RecordScalars:
        """Take one measured record; it is finished here, with those pending, if ``now``, if records are
        arriving more than ``linger`` apart, or if the batch is full or has waited ``linger``."""
        arrived = time.monotonic()
        quick, self._last = arrived - self._last < self._linger, arrived
        if not self._records:
            self._oldest = arrived
        scalars = RecordScalars(self.finish)
        self._records.append((step, gather, scalars))
        if now or not quick or len(self._records) >= self._max_records or arrived - self._oldest >= self._linger:
            self.finish()
        return scalars

    def stale(self) -> bool:
        """True when a record has waited ``linger`` seconds (the training loop checks it at every step)."""
        return bool(self._records) and time.monotonic() - self._oldest >= self._linger

    def finish(self) -> None:
        """Finish every pending record: one batched reduction and transfer, then ``emit`` each in turn."""
        records, self._records = self._records, []
        if not records:
            return
        try:
            values: list[dict[str, float] | Exception] = list(gather_floats([gather for _, gather, _ in records]))
        except Exception:  # one bad record must not take the others with it: finish each alone
            values = []
            for _, gather, _ in records:
                try:
                    values.append(gather.floats())
                except Exception as error:
                    values.append(error)
        for (step, _, scalars), value in zip(records, values):
            if isinstance(value, Exception):
                scalars._set({})
                self._fail(step, f"{type(value).__name__}: {value}")
            else:
                scalars._set(value)
                self._emit(step, value)
