"""Tests for landscape.callbacks.cadence: linear and log-spaced schedules, bad arguments."""

from __future__ import annotations

import pytest

from landscape.callbacks import Cadence


# -- cadence ----------------------------------------------------------------------------------------------
def test_linear_cadence_runs_at_multiples_and_catches_up_after_a_skip() -> None:
    cadence = Cadence(10)
    ran = []
    for step in [0, 3, 9, 10, 11, 25, 29, 30]:
        if cadence.due(step):
            cadence.mark(step)
            ran.append(step)
    assert ran == [0, 10, 25, 30]


def test_linear_cadence_catches_up_when_the_first_call_is_not_on_a_multiple() -> None:
    cadence = Cadence(10)
    ran = []
    for step in [1, 6, 11, 16, 21, 26, 31]:  # never lands on a multiple of 10
        if cadence.due(step):
            cadence.mark(step)
            ran.append(step)
    assert ran == [11, 21, 31]
    assert Cadence(10).first_due(1) == 10


def test_log_cadence_grows_geometrically_with_a_minimum_gap() -> None:
    cadence = Cadence(10, "log", points_per_decade=10)
    ran = []
    for step in range(1, 400):
        if cadence.due(step):
            cadence.mark(step)
            ran.append(step)
    # first call, then next = max(step + 10, round(step * 10^0.1)): gaps of 10 until the ratio takes over
    # (41 * 1.2589 = 51.6 -> 52, 52 -> 65.5 -> 65, ..., 259 -> 326.1 -> 326)
    assert ran == [1, 11, 21, 31, 41, 52, 65, 82, 103, 130, 164, 206, 259, 326]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"every": 0}, "every must be a positive integer"),
    ({"every": 2.5}, "every must be a positive integer"),
    ({"every": 5, "schedule": "cosine"}, "schedule must be 'linear' or 'log'"),
    ({"every": 5, "points_per_decade": 0}, "points_per_decade must be"),
])
def test_cadence_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Cadence(**kwargs)

