"""What the ranks must agree on before they add up their measurements: the model and the data size."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from landscape.data import Batches
from landscape.distributed.group import check_agreement, data_mode, rank, world_size
from landscape.distributed.shard import shard_batches

__all__ = ["check_same_model", "local_share", "parameter_fingerprint"]


def parameter_fingerprint(params: dict[str, torch.Tensor] | nn.Module) -> tuple[int, float, float]:
    """``(count, Σθ, Σθ²)`` of the parameters in float64: equal on ranks that hold the same weights.

    Ranks that load one checkpoint hold bit-identical weights, so the sums agree exactly; a model built
    from another seed or step differs in the first digits.
    """
    tensors = list(params.parameters() if isinstance(params, nn.Module) else params.values())
    count = sum(t.numel() for t in tensors)
    total = sum(float(t.detach().double().sum()) for t in tensors)
    squares = sum(float(t.detach().double().square().sum()) for t in tensors)
    return count, total, squares


def check_same_model(params: dict[str, torch.Tensor] | nn.Module) -> None:
    """Raise on every rank unless all ranks hold the same parameters (count and checksums)."""
    check_agreement("the model's parameters (count, sum, sum of squares)", parameter_fingerprint(params),
                    "every rank must load the same model and checkpoint.")


def local_share(data: Batches) -> tuple[Batches, bool]:
    """This rank's part of ``data`` in the current data mode, and whether measurements on it are summed
    over the ranks (False outside a group, where the part is all of ``data``).

    ``"sharded"``: ``data`` is already this rank's part. ``"replicated"``: the ranks check that they hold
    the same number of samples, then each keeps its contiguous shard
    (:func:`~landscape.distributed.shard.shard_batches`); data with fewer samples than ranks is not
    shared out (every rank measures all of it, and nothing is summed).
    """
    mode = data_mode()
    if mode is None:
        return data, False
    if mode == "sharded":
        return data, True
    key = (id(data), world_size())
    cached = _SHARES.get(key)
    if cached is not None and cached[0]() is data:  # the probes ask again for every loss and gradient
        shard = cached[1]
    else:
        check_agreement("the number of samples", data.n_samples,
                        "with replicated data every rank must load the same samples (same data factory and seed).")
        shard = None if data.n_samples < world_size() else shard_batches(data, rank(), world_size())
        _SHARES[key] = (weakref.ref(data, lambda _, key=key: _SHARES.pop(key, None)), shard)
    return (data, False) if shard is None else (shard, True)


# This rank's shard of each replicated data set seen (None: too small to share), checked once and dropped
# with the data; the shard holds no reference to the data itself.
_SHARES: dict[tuple[int, int], tuple[weakref.ref, Batches | None]] = {}
