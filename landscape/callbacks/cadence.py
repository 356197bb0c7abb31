"""When something runs during training: every ``every`` steps, or on a log-spaced schedule.

Both the monitor's cheap record and each registered probe own a :class:`Cadence`; keeping the rule in one
small object lets the monitor compute the next step anything is due and return at once until then.
"""

from __future__ import annotations

__all__ = ["Cadence"]


class Cadence:
    """Decides at which steps something runs.

    ``linear``: at every multiple of ``every`` (a call that skips over one runs at the first step past it).
    ``log``: at the first call, then whenever ``step ≥ next``, with ``next = max(step + every,
    round(step · 10^(1/points_per_decade)))`` — dense early, geometric later, so a long run is covered
    with few evaluations.
    """

    def __init__(self, every: int, schedule: str = "linear", points_per_decade: int = 10) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}.")
        if schedule not in ("linear", "log"):
            raise ValueError(f"schedule must be 'linear' or 'log', got {schedule!r}.")
        if not isinstance(points_per_decade, int) or points_per_decade < 1:
            raise ValueError(f"points_per_decade must be a positive integer, got {points_per_decade!r}.")
        self.every = every
        self.schedule = schedule
        self.ratio = 10.0 ** (1.0 / points_per_decade)
        self._next: int | None = None
        self._last: int | None = None  # the step it last ran at

    def _start(self, step: int) -> None:
        # linear: the first multiple at or after the first step seen, so a later call past it still runs
        if self._next is None and self.schedule == "linear":
            self._next = -(-step // self.every) * self.every

    def due(self, step: int) -> bool:
        """True if the thing should run at ``step`` (does not advance the cadence)."""
        self._start(step)
        if self._next is None:
            return True  # log: the first call
        return step >= self._next

    def first_due(self, step: int) -> int:
        """The first step ``≥ step`` at which :meth:`due` holds (if nothing runs in between)."""
        self._start(step)
        if self._next is None:
            return step
        return max(self._next, step)

    def ran_at(self, step: int) -> bool:
        """True if it last ran at exactly ``step``."""
        return self._last == step

    def mark(self, step: int) -> None:
        """Record that it ran at ``step``."""
        self._last = step
        if self.schedule == "linear":
            self._next = (step // self.every + 1) * self.every
        else:
            self._next = max(step + self.every, int(round(step * self.ratio)))
