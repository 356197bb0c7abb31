"""The probe protocol and its registry: what the runner hands a probe, what it returns, how probes are found.

A probe is any object with a ``name``, a ``defaults`` dict of its params and ``run(ctx, **params) ->
Result``; one that reads ``ctx.optimizer_state`` says so with ``uses_optimizer_state = True`` (the runner
reads the optimizer state from the checkpoint only for such probes), and ``needs_data = False`` marks one
that reads only the weights. :class:`ProbeContext` carries everything a probe may use at one checkpoint;
:class:`Result` is saved as one unit by the store. The registry discovers every module of the ``probes``
package that defines a module-level ``PROBE``, on first use, so the core names the package only here and
by string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from landscape.checkpoints import Checkpoint
from landscape.data import Batches
from landscape.evaluate import LossFn


class PartialRows(Protocol):
    """Storage for the finished rows of a long probe (a 2D grid), so an interrupted run resumes."""

    def load(self) -> dict[int, dict[str, np.ndarray]]:
        """Rows already finished, by row index."""
        ...

    def save(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Persist one finished row (committed at once)."""
        ...


@dataclass
class ProbeContext:
    """Everything a probe may use at one checkpoint.

    ``model`` is in eval mode with the checkpoint's weights; the runner restores mode and weights after
    the probe. ``checkpoints`` lists every checkpoint of the run (for trajectory probes) and
    ``load_state(checkpoint)`` returns one's state dict. ``partial`` is set by the runner when a store
    is attached, so long probes can save finished rows and resume. ``optimizer_state`` is the optimizer
    state at this checkpoint when known: a :class:`landscape.checkpoints.SavedOptimizer` read from the
    checkpoint (the runner), or the live ``torch.optim`` optimizer (during training).
    """

    model: nn.Module
    loss_fn: LossFn
    train: Batches
    test: Batches | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    step: int = 0
    run: str = "run"
    checkpoints: list[Checkpoint] = field(default_factory=list)
    load_state: Callable[[Checkpoint], dict[str, torch.Tensor]] | None = None
    lr: float | None = None
    partial: PartialRows | None = None
    progress: bool = False
    optimizer_state: Any = None


@dataclass
class Result:
    """Named scalars and arrays from one probe at one checkpoint, plus the params that produced them.

    ``valid=False`` marks a result that ran but is not meaningful (e.g. the loss was NaN at this
    checkpoint); ``message`` then says why. The store saves a result as one unit.
    """

    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    valid: bool = True
    message: str | None = None

    def __post_init__(self) -> None:
        self.scalars = {str(k): float(v) for k, v in self.scalars.items()}
        self.arrays = {str(k): np.asarray(v) for k, v in self.arrays.items()}

    @classmethod
    def invalid(cls, message: str, params: dict[str, Any] | None = None) -> Result:
        """A result that records why the probe could not measure this checkpoint."""
        return cls(params=dict(params or {}), valid=False, message=message)

    def has_nonfinite(self) -> bool:
        return any(not math.isfinite(v) for v in self.scalars.values())


@runtime_checkable
class Probe(Protocol):
    """A registered analysis: ``run(ctx, **params) -> Result``; ``defaults`` lists its params."""

    name: str
    defaults: ClassVar[dict[str, Any]]

    def run(self, ctx: ProbeContext, **params: Any) -> Result: ...


def needs_data(probe: Probe) -> bool:
    """Whether ``probe`` measures the model on data; a data-free probe (one that reads only the weights)
    sets the class attribute ``needs_data = False``, and the runner then neither loads nor checks data for it.
    """
    return bool(getattr(probe, "needs_data", True))


def resolve_params(probe: Probe, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The probe's defaults updated with ``params``; unknown names are an error naming them."""
    given = dict(params or {})
    unknown = sorted(set(given) - set(probe.defaults))
    if unknown:
        raise ValueError(
            f"probe {probe.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(probe.defaults)) or 'none'}."
        )
    return {**probe.defaults, **given}


# -- registry -------------------------------------------------------------------------------------------
PROBES_PACKAGE = "probes"
DEFAULT_ORDER = ("metrics", "grokking", "sharpness", "hessian", "noise", "collapse", "slices")
_INFRASTRUCTURE = {"base"}
_registry: dict[str, Probe] | None = None


def registry() -> dict[str, Probe]:
    """All registered probes by name; the probe modules are imported on the first call."""
    global _registry
    if _registry is None:
        import importlib
        import pkgutil

        package = importlib.import_module(PROBES_PACKAGE)
        found: dict[str, Probe] = {}
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name in _INFRASTRUCTURE or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{PROBES_PACKAGE}.{info.name}")
            probe = getattr(module, "PROBE", None)
            if probe is not None:
                found[probe.name] = probe
        _registry = found
    return _registry


def available() -> list[str]:
    """Names of the registered probes, in their default running order (unknown ones last, by name)."""
    names = list(registry())
    order = list(DEFAULT_ORDER)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def get(name: str) -> Probe:
    """The probe called ``name``; the error lists the known ones."""
    probes = registry()
    if name not in probes:
        raise KeyError(f"unknown probe {name!r}; registered probes: {', '.join(available())}.")
    return probes[name]
