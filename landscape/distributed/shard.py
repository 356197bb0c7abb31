"""Deterministic, contiguous shards of a fixed sample set, one per rank (unequal sizes honoured)."""

from __future__ import annotations

from landscape.batch import Batch
from landscape.data import Batches
from landscape.distributed.group import DistributedError

__all__ = ["shard_batches", "shard_bounds"]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Samples ``[start, stop)`` of rank ``rank``: contiguous, the first ``n % world`` ranks one more."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world}), got {rank}.")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_batches(batches: Batches, rank: int, world: int) -> Batches:
    """Rank ``rank``'s contiguous share of the samples of ``batches``, in order, cut where batches are.

    Batches that straddle a shard boundary are cut with :meth:`Batch.rows`, so the shards partition the
    samples exactly and a weighted sum over the ranks equals the full-data sum.
    """
    n = batches.n_samples
    if n < world:
        raise DistributedError(f"the data holds {n} samples, fewer than the {world} ranks it is shared among; "
                               "give every rank at least one sample or run on fewer ranks.")
    start, stop = shard_bounds(n, rank, world)
    kept: list[Batch] = []
    offset = 0
    for batch in batches:
        size = batch.n_samples
        low, high = max(start, offset), min(stop, offset + size)
        if low < high:
            kept.append(batch if (low, high) == (offset, offset + size) else batch.rows(low - offset, high - offset))
        offset += size
    return Batches(tuple(kept), batches.spec)
