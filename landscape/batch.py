"""One batch of any structure, and how it is fed to a model.

Training code hands models batches in several shapes; a :class:`Batch` records which one and feeds it back
the same way:

* ``"pair"``: ``(inputs, targets)`` — ``model(inputs)``;
* ``"tuple"``: ``(in_1, …, in_k, targets)`` — ``model(in_1, …, in_k)`` (the targets are the last element);
* ``"mapping"``: a dict or any ``Mapping`` such as Hugging Face's ``BatchEncoding`` — ``model(**entries)``;
  the targets are the entry under :attr:`BatchSpec.targets_key` (``"labels"`` by default), left out of the
  call unless the model computes its own loss;
* ``"dataclass"``: a dataclass instance — its fields as keyword arguments, as for a mapping.

A dict with exactly the keys ``inputs``/``targets`` (or ``x``/``y``) is a pair, as it always was.

The number of samples of a batch is the leading dimension of its targets; every tensor whose leading
dimension is that number is cut when the batch is subset (``max_samples``) or re-batched, and other
entries (scalars, flags, strings) are carried along unchanged. How much a batch weighs in the full-data
mean (samples, or non-ignored tokens for token-level losses) depends on the loss, and is decided by
:class:`landscape.objective.Objective`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["STRUCTURES", "Batch", "BatchSpec", "DataError", "as_batch", "concat"]

STRUCTURES = ("pair", "tuple", "mapping", "dataclass")
_PAIR_KEYS = (("inputs", "targets"), ("x", "y"))


class DataError(ValueError):
    """The data argument cannot be turned into batches."""


@dataclass(frozen=True)
class BatchSpec:
    """Where the targets of a mapping or dataclass batch are (tuples always hold them last)."""

    targets_key: str = "labels"

    def __post_init__(self) -> None:
        if not isinstance(self.targets_key, str) or not self.targets_key:
            raise DataError(f"targets_key must be a non-empty string, got {self.targets_key!r}.")


def _tensor(value: object, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise DataError(f"{what} must be a tensor or numpy array, got {type(value).__name__}.")


def _maybe_tensor(value: object) -> object:
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


class Batch:
    """One batch: positional inputs ``args``, keyword inputs ``kwargs`` and its ``targets``.

    ``structure`` is one of :data:`STRUCTURES`; for mapping and dataclass batches ``targets_key`` names the
    entry the targets came from (it is passed back under that name when the model computes its own loss).
    Pair batches unpack as ``inputs, targets = batch``.
    """

    __slots__ = ("args", "kwargs", "structure", "targets", "targets_key")

    def __init__(self, structure: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], targets: torch.Tensor,
                 targets_key: str | None = None) -> None:
        if structure not in STRUCTURES:
            raise DataError(f"batch structure must be one of {STRUCTURES}, got {structure!r}.")
        self.structure = structure
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.targets = targets
        self.targets_key = targets_key

    # -- what it is ------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Samples in the batch: the leading dimension of the targets."""
        return int(self.targets.shape[0]) if self.targets.dim() else 1

    @property
    def inputs(self) -> Any:
        """The model's single positional input (pair batches), else the first positional or keyword tensor."""
        if self.args:
            return self.args[0]
        return next((v for v in self.kwargs.values() if isinstance(v, torch.Tensor)), None)

    @property
    def device(self) -> torch.device:
        return self.targets.device

    def signature(self) -> tuple[Any, ...]:
        """What must agree between the batches of one data set: the structure and its keys or arity."""
        if self.structure in ("mapping", "dataclass"):
            return self.structure, tuple(sorted(self.kwargs)), self.targets_key
        return self.structure, len(self.args)

    def describe(self) -> str:
        """A short phrase for messages: ``a dict with keys [...]`` or ``a tuple of 3 tensors``."""
        if self.structure == "pair":
            return "an (inputs, targets) pair"
        if self.structure == "tuple":
            return f"a tuple of {len(self.args) + 1} entries"
        what = "a dict" if self.structure == "mapping" else "a dataclass"
        return f"{what} with keys {sorted([*self.kwargs, self.targets_key])}"

    def __iter__(self) -> Iterator[Any]:
        if self.structure != "pair":
            raise DataError(f"only (inputs, targets) pair batches unpack into two values; this is {self.describe()}.")
        return iter((self.args[0], self.targets))

    def __repr__(self) -> str:
        return f"Batch({self.describe()}, n_samples={self.n_samples})"

    # -- feeding the model -----------------------------------------------------------------------------
    def feed(self, fn: Callable[..., Any], *, with_targets: bool = False) -> Any:
        """Call ``fn`` (the model, or a functional form of it) on the batch's inputs.

        ``with_targets`` also passes the targets, for models that compute their own loss: as the keyword
        ``targets_key`` for mapping/dataclass batches, as the last positional argument otherwise.
        """
        if not with_targets:
            return fn(*self.args, **self.kwargs)
        if self.structure in ("mapping", "dataclass"):
            return fn(*self.args, **self.kwargs, **{str(self.targets_key): self.targets})
        return fn(*self.args, self.targets, **self.kwargs)

    # -- new batches from this one ---------------------------------------------------------------------
    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], only_rows: bool) -> Batch:
        n = self.n_samples

        def apply(value: Any) -> Any:
            if not isinstance(value, torch.Tensor):
                return value
            if only_rows and (value.dim() == 0 or value.shape[0] != n):
                return value
            return fn(value)

        return Batch(self.structure, tuple(apply(a) for a in self.args), {k: apply(v) for k, v in self.kwargs.items()},
                     fn(self.targets), self.targets_key)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        return self._map(lambda t: t.to(device), only_rows=False)

    def select(self, index: torch.Tensor) -> Batch:
        """The samples at ``index`` (a 1-D integer tensor), in that order."""
        index = index.to(self.device)
        return self._map(lambda t: t.index_select(0, index.to(t.device)), only_rows=True)

    def rows(self, start: int, stop: int) -> Batch:
        """Samples ``start:stop``."""
        return self._map(lambda t: t[start:stop], only_rows=True)

    def with_targets(self, targets: torch.Tensor) -> Batch:
        """The same inputs with other targets."""
        return Batch(self.structure, self.args, self.kwargs, targets, self.targets_key)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batch, inputs first."""
        values = [*self.args, *self.kwargs.values(), self.targets]
        return [v for v in values if isinstance(v, torch.Tensor)]


# -- parsing one item of a data set -------------------------------------------------------------------------
def _pair(x: object, y: object, index: int) -> Batch:
    inputs = _tensor(x, f"inputs of batch {index}")
    targets = _tensor(y, f"targets of batch {index}")
    if inputs.dim() and targets.dim() and inputs.shape[0] != targets.shape[0]:
        raise DataError(f"batch {index} has {inputs.shape[0]} inputs but {targets.shape[0]} targets; "
                        "they must match along dim 0.")
    return Batch("pair", (inputs,), {}, targets)


def _keyed(structure: str, entries: Mapping[str, Any], spec: BatchSpec, index: int, what: str) -> Batch:
    key = spec.targets_key
    if key not in entries:
        raise DataError(f"batch {index} is {what} without the targets key {key!r} (keys: {sorted(map(str, entries))}); "
                        f"set targets_key (CLI: --targets-key) to the key that holds the targets.")
    targets = _tensor(entries[key], f"the targets {key!r} of batch {index}")
    kwargs = {str(k): _maybe_tensor(v) for k, v in entries.items() if k != key}
    n = int(targets.shape[0]) if targets.dim() else 1
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] != n and value.shape[0] > 1:
            raise DataError(f"batch {index}: entry {name!r} has {value.shape[0]} rows but the targets {key!r} "
                            f"have {n}; they must match along dim 0.")
    return Batch(structure, (), kwargs, targets, key)


def as_batch(item: object, index: int = 0, spec: BatchSpec | None = None) -> Batch:
    """Parse one batch of a data set (see the module docstring for the accepted structures)."""
    spec = spec or BatchSpec()
    if isinstance(item, Batch):
        return item
    if isinstance(item, Mapping):
        keys = set(item)
        for pair in _PAIR_KEYS:
            if keys == set(pair) and spec.targets_key not in keys:
                return _pair(item[pair[0]], item[pair[1]], index)
        return _keyed("mapping", item, spec, index, "a dict")
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
        return _keyed("dataclass", fields, spec, index, f"a dataclass ({type(item).__name__})")
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"batch {index} must be an (inputs, targets) pair, a tuple ending in its targets, a dict or a "
                        f"dataclass of tensors, got {type(item).__name__}.")
    if len(item) == 2:
        return _pair(item[0], item[1], index)
    args = tuple(_tensor(v, f"input {i} of batch {index}") for i, v in enumerate(item[:-1]))
    targets = _tensor(item[-1], f"targets of batch {index}")
    for i, a in enumerate(args):
        if a.dim() and targets.dim() and a.shape[0] != targets.shape[0]:
            raise DataError(f"batch {index}: input {i} has {a.shape[0]} rows but the targets have "
                            f"{targets.shape[0]}; they must match along dim 0.")
    return Batch("tuple", args, {}, targets)


# -- joining batches ---------------------------------------------------------------------------------------
def _join(values: Sequence[torch.Tensor], pad: float | int | None, what: str) -> torch.Tensor:
    shapes = {tuple(v.shape[1:]) for v in values}
    if len(shapes) == 1:
        return torch.cat(list(values))
    if pad is None or len({v.dim() for v in values}) != 1:
        raise DataError(f"{what} has shapes {sorted(shapes)} in different batches; re-batching needs equal shapes "
                        "beyond dim 0 (pad the batches to one length, with an attention_mask).")
    target = [max(v.shape[d] for v in values) for d in range(1, values[0].dim())]
    padded = []
    for v in values:
        widths: list[int] = []
        for d in reversed(range(1, v.dim())):
            widths += [0, target[d - 1] - v.shape[d]]
        padded.append(torch.nn.functional.pad(v, widths, value=pad))
    return torch.cat(padded)


def concat(batches: Sequence[Batch], ignore_index: int = -100) -> Batch:
    """The samples of several batches of one structure as one batch, in order.

    Sequence batches of unequal lengths are right-padded when they carry an ``attention_mask``: inputs
    with 0, the mask with 0 (padding is attended by no one) and the targets with ``ignore_index`` (no
    loss), which leaves every sample's loss unchanged for models that honour the mask.
    """
    first = batches[0]
    if len(batches) == 1:
        return first
    for b in batches[1:]:
        if b.signature() != first.signature():
            raise DataError(f"cannot join {b.describe()} with {first.describe()}.")
    padded = "attention_mask" in first.kwargs
    n = first.n_samples

    def joined(values: list[Any], name: str, pad: float | int | None) -> Any:
        if all(isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == b.n_samples
               for v, b in zip(values, batches)):
            return _join(values, pad if padded else None, name)
        if isinstance(values[0], torch.Tensor) and values[0].dim() and values[0].shape[0] == n:
            raise DataError(f"entry {name} is per-sample in some batches only; cannot join them.")
        return values[0]

    args = tuple(joined([b.args[i] for b in batches], f"input {i}", 0) for i in range(len(first.args)))
    kwargs = {k: joined([b.kwargs[k] for b in batches], repr(k), 0) for k in first.kwargs}
    targets = _join([b.targets for b in batches], ignore_index if padded else None, "the targets")
    return Batch(first.structure, args, kwargs, targets, first.targets_key)
