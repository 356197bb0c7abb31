"""Normalize every accepted data argument into a fixed list of batches (:class:`landscape.batch.Batch`).

Probes measure the *same* samples at every checkpoint, so data is materialized once into a
:class:`Batches` object (a re-iterable, sized list of batches on one device). Accepted:

* one ``(X, y)`` tuple of tensors (or arrays), one dict / ``BatchEncoding`` of tensors, one dataclass batch,
* a list/tuple of such batches (batches may have unequal sizes, but all have one structure),
* a ``torch.utils.data.DataLoader`` (or any iterable of batches),
* an existing :class:`Batches` (moved to the device if needed).

Each batch is a pair, a tuple ending in its targets, a mapping or a dataclass (see :mod:`landscape.batch`);
the targets of mappings and dataclasses are under ``targets_key`` (``"labels"`` by default).
``max_samples`` keeps a seeded random subset of that many samples, chosen over the whole data set, so
the subset is identical from one call (and one checkpoint) to the next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from landscape.batch import Batch, BatchSpec, DataError, as_batch, concat

__all__ = ["Batch", "BatchSpec", "Batches", "DataError", "as_batches"]


@dataclass(frozen=True)
class Batches:
    """A fixed, re-iterable list of :class:`~landscape.batch.Batch` on one device."""

    batches: tuple[Batch, ...]
    spec: BatchSpec = field(default_factory=BatchSpec)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def n_samples(self) -> int:
        """Total number of samples over all batches."""
        return sum(b.n_samples for b in self.batches)

    @property
    def device(self) -> torch.device:
        return self.batches[0].device

    @property
    def structure(self) -> str:
        """The structure every batch shares (``"pair"``, ``"tuple"``, ``"mapping"`` or ``"dataclass"``)."""
        return self.batches[0].structure

    def to(self, device: torch.device | str) -> Batches:
        """The same batches on ``device`` (self if already there)."""
        device = torch.device(device)
        if all(_same_device(t.device, device) for b in self.batches for t in b.tensors()):
            return self
        return Batches(tuple(b.to(device) for b in self.batches), self.spec)

    def merged(self) -> Batch:
        """All samples as one batch (sequence batches of unequal lengths padded, see :func:`concat`)."""
        return concat(self.batches)

    def split(self, max_batch_size: int) -> Batches:
        """Every batch of more than ``max_batch_size`` samples cut into consecutive parts of at most that
        many (batches are never merged, so sequence batches need no new padding)."""
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise DataError(f"max_batch_size must be a positive integer, got {max_batch_size!r}.")
        parts: list[Batch] = []
        for batch in self.batches:
            n = batch.n_samples
            parts.extend(batch.rows(i, min(i + max_batch_size, n)) for i in range(0, n, max_batch_size))
        return Batches(tuple(parts), self.spec)

    def rebatched(self, batch_size: int) -> Batches:
        """The same samples in order, cut into batches of ``batch_size`` (last one may be smaller)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}.")
        whole = self.merged()
        n = whole.n_samples
        return Batches(tuple(whole.rows(i, i + batch_size) for i in range(0, n, batch_size)), self.spec)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.index is None or b.index is None


def _looks_like_single_pair(data: object) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], (torch.Tensor, np.ndarray))
        and isinstance(data[1], (torch.Tensor, np.ndarray))
    )


def _looks_like_single_batch(data: object) -> bool:
    if isinstance(data, Mapping):
        return bool(data) and any(isinstance(v, (torch.Tensor, np.ndarray)) for v in data.values())
    return dataclasses.is_dataclass(data) and not isinstance(data, type)


def _collect(data: object, spec: BatchSpec) -> list[Batch]:
    if isinstance(data, Batches):
        return list(data.batches)
    if isinstance(data, Batch):
        return [data]
    if _looks_like_single_pair(data) or _looks_like_single_batch(data):
        return [as_batch(data, 0, spec)]
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DataError(
            "data must be an (X, y) tuple, a dict of tensors, a list of batches or a DataLoader, "
            f"got {type(data).__name__}."
        )
    batches = [as_batch(item, i, spec) for i, item in enumerate(data)]
    for i, batch in enumerate(batches[1:], start=1):
        if batch.signature() != batches[0].signature():
            raise DataError(f"batch {i} is {batch.describe()} but batch 0 is {batches[0].describe()}; "
                            "every batch of a data set must have the same structure.")
    return batches


def _subset(batches: list[Batch], max_samples: int, seed: int) -> list[Batch]:
    sizes = [b.n_samples for b in batches]
    total = sum(sizes)
    if max_samples >= total:
        return batches
    generator = np.random.default_rng(seed)
    keep = np.sort(generator.choice(total, size=max_samples, replace=False))
    out: list[Batch] = []
    start = 0
    for batch, size in zip(batches, sizes):
        local = keep[(keep >= start) & (keep < start + size)] - start
        if len(local):
            out.append(batch.select(torch.as_tensor(local)))
        start += size
    return out


def as_batches(
    data: object,
    *,
    device: torch.device | str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    name: str = "data",
    targets_key: str | None = None,
) -> Batches:
    """Turn any accepted data argument into :class:`Batches` on ``device``.

    ``max_samples`` keeps a seeded subset (same samples every call); ``batch_size`` re-cuts the kept
    samples into batches of that size; ``targets_key`` says where the targets of dict/dataclass batches
    are (default ``"labels"``). ``name`` is used in error messages ("train data", ...).
    """
    if data is None:
        raise DataError(f"{name} is None; pass an (X, y) tuple, a list of batches or a DataLoader.")
    try:
        spec = data.spec if isinstance(data, Batches) and targets_key is None else BatchSpec(targets_key or "labels")
        batches = _collect(data, spec)
    except DataError as error:
        raise DataError(f"{name}: {error}") from None
    batches = [b for b in batches if b.n_samples > 0]
    if not batches:
        raise DataError(f"{name} is empty: it holds no samples.")
    try:
        if max_samples is not None:
            if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
                raise DataError(f"max_samples must be a positive integer, got {max_samples}.")
            batches = _subset(batches, int(max_samples), seed)
        result = Batches(tuple(batches), spec)
        if device is not None:
            result = result.to(device)
        if batch_size is not None:
            result = result.rebatched(batch_size)
    except DataError as error:
        message = str(error)
        raise DataError(message if message.startswith("max_samples") else f"{name}: {message}") from None
    return result
