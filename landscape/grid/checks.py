"""Arguments of a grid checked once, with one clear sentence on bad input, and the grid's axes.

``steps`` is the number of points along an axis (at least 2), a ``span`` is a number ``s`` for ``(-s, s)``,
one ``(lo, hi)`` pair for every axis, or ``(x_lo, x_hi, y_lo, y_hi)``; :func:`axis` puts a point exactly on
0 when the span contains it, so the centre of a grid is the unperturbed model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from landscape.params import trainable_parameters

__all__ = ["axis", "check_model", "check_span", "check_steps", "check_steps_2d", "device_of"]


def check_steps(steps: object, what: str = "steps") -> int:
    """The number of grid points along one axis: an integer of at least 2."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or int(steps) < 2:
        raise ValueError(f"{what} must be an integer of at least 2 (grid points along an axis), got {steps!r}.")
    return int(steps)


def check_steps_2d(steps: object) -> tuple[int, int]:
    """``(steps_x, steps_y)`` from one integer (both axes) or a pair."""
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        n = check_steps(steps)
        return n, n
    if isinstance(steps, Sequence) and not isinstance(steps, str) and len(steps) == 2:
        return check_steps(steps[0], "steps[0] (points along x)"), check_steps(steps[1], "steps[1] (points along y)")
    raise ValueError(f"steps must be an integer or a pair (steps_x, steps_y), got {steps!r}.")


def _check_interval(lo: object, hi: object, what: str) -> tuple[float, float]:
    try:
        lo_f, hi_f = float(lo), float(hi)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold numbers, got ({lo!r}, {hi!r}).") from None
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)) or lo_f >= hi_f:
        raise ValueError(f"{what} must be finite with start < end, got ({lo!r}, {hi!r}).")
    return lo_f, hi_f


def check_span(span: object, dims: int) -> tuple[float, ...]:
    """A span as ``2·dims`` floats: a number ``s`` means ``(-s, s)`` on every axis; a pair applies to
    every axis; otherwise ``(x_lo, x_hi[, y_lo, y_hi])``."""
    if isinstance(span, (int, float, np.integer, np.floating)) and not isinstance(span, bool):
        s = float(span)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"span must be a positive number or a tuple of bounds, got {span!r}.")
        return (-s, s) * dims
    if isinstance(span, Sequence) and not isinstance(span, str):
        values = list(span)
        if len(values) == 2:
            return _check_interval(values[0], values[1], "span") * dims
        if len(values) == 2 * dims:
            out: tuple[float, ...] = ()
            for k, name in enumerate("xy"[:dims]):
                out += _check_interval(values[2 * k], values[2 * k + 1], f"span ({name} bounds)")
            return out
    shape = "(lo, hi)" if dims == 1 else "(x_lo, x_hi, y_lo, y_hi)"
    raise ValueError(f"span must be a positive number or a tuple {shape}, got {span!r}.")


def axis(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced values from lo to hi; a value within rounding of 0 is set to exactly 0 so the
    grid's centre is the unperturbed model."""
    x = np.linspace(lo, hi, n)
    x[np.abs(x) < 1e-12 * (hi - lo)] = 0.0
    return x


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def check_model(model: object, what: str = "model") -> nn.Module:
    """``model`` itself, checked to be a module with trainable parameters to move along."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}.")
    if not trainable_parameters(model):
        raise ValueError(f"{what} has no trainable parameters to move along.")
    return model
