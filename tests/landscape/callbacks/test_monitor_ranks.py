"""The Monitor in a data-parallel job: each rank holds its own shard of the probe data, the probes sum
their measurements over the ranks, and rank 0 records the full-data value once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F
from callback_helpers import _data, _model

from landscape.callbacks import Monitor
from landscape.distributed.launch import run_ranks
from landscape.store import Store


def _rank_job(rank: int, world: int, path: str) -> None:
    x, y = _data(n=60)
    bounds = [0, 37, 60]  # unequal shards, as a DistributedSampler's last rank may have
    shard = (x[bounds[rank] : bounds[rank + 1]], y[bounds[rank] : bounds[rank + 1]])
    monitor = Monitor(path, "ddp", probes={"hessian": {"every": 1, "k": 2, "tol": 1e-6, "density": False}},
                      every=1, data=shard, loss_fn=F.cross_entropy)
    monitor.step(_model(), 0, force=True)
    monitor.close()


def test_monitor_probes_measure_the_union_of_the_ranks_data(tmp_path: Path) -> None:
    from probes import hessian

    path = tmp_path / "ddp.sqlite"
    run_ranks(_rank_job, 2, str(path), timeout_s=240)
    want = hessian.eigenvalues(_model(), F.cross_entropy, _data(n=60), k=2, tol=1e-6).values
    with Store(path, readonly=True) as store:
        stored = store.scalars(run="ddp", probe="hessian")
        assert len(stored[stored.key == "lambda_1"]) == 1  # recorded once
        got = [float(stored[stored.key == key].value.iloc[0]) for key in ("lambda_1", "lambda_2")]
    # float32 model: the two ranks' partial sums round differently from one process's (~1e-7 relative)
    np.testing.assert_allclose(got, want, rtol=1e-4)
