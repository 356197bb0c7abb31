"""Shards partition the samples exactly, in order, with unequal sizes; outside a group nothing changes."""

from __future__ import annotations

import pytest
import torch

from landscape.curvature import CurvatureOperator
from landscape.data import as_batches
from landscape.distributed import (
    DistributedError,
    curvature_operator,
    data_mode,
    data_parallel,
    local_share,
    shard_batches,
    shard_bounds,
)


@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 7), (37, 2), (5, 4)])
def test_bounds_partition_the_samples_with_the_first_ranks_one_larger(n: int, world: int) -> None:
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert sizes == [n // world + (1 if r < n % world else 0) for r in range(world)]


def test_shards_cut_straddling_batches_and_keep_order() -> None:
    x = torch.arange(10.0).reshape(10, 1)
    data = as_batches([(x[:4], torch.zeros(4)), (x[4:9], torch.ones(5)), (x[9:], torch.ones(1))])
    pieces = [shard_batches(data, r, 3) for r in range(3)]
    assert [[b.n_samples for b in p] for p in pieces] == [[4], [3], [2, 1]]
    joined = torch.cat([b.inputs[0] if isinstance(b.inputs, tuple) else b.inputs for p in pieces for b in p])
    assert torch.equal(joined.reshape(-1), x.reshape(-1))


def test_fewer_samples_than_ranks_is_refused_with_the_counts() -> None:
    data = as_batches((torch.zeros(2, 1), torch.zeros(2)))
    with pytest.raises(DistributedError, match="holds 2 samples, fewer than the 3 ranks"):
        shard_batches(data, 0, 3)


def test_outside_a_group_every_mode_is_a_single_process() -> None:
    model = torch.nn.Linear(2, 2).double()
    data = as_batches((torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1])))
    with data_parallel("replicated"):
        assert data_mode() is None
        assert local_share(data) == (data, False)
        op = curvature_operator(model, torch.nn.CrossEntropyLoss(), data)
    assert type(op) is CurvatureOperator
    with pytest.raises(ValueError, match="data mode must be one of"):
        with data_parallel("everywhere"):
            pass
