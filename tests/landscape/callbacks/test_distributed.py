"""Tests for the monitor under torch.distributed: two gloo processes on 127.0.0.1, only rank 0 writes."""

from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from callback_helpers import _data, _model

from landscape.callbacks import Monitor
from landscape.store import Store

WORLD = 2
STEPS = 12


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(rank: int, port: int, path: str) -> None:
    """One rank: the monitor is built before the process group exists (as the framework adapters build it)."""
    import landscape.store

    if rank != 0:  # any attempt to open the store on this rank fails the test
        def refuse(self: Store, *args: object, **kwargs: object) -> None:
            raise AssertionError(f"rank {rank} opened the store")

        landscape.store.Store.__init__ = refuse  # type: ignore[method-assign]
    monitor = Monitor(path, "ddp", probes={"metrics": {"every": 4}}, every=3, data=_data(), loss_fn=F.cross_entropy,
                      save_checkpoints=True, checkpoint_every=6)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = _data(seed=rank)  # each rank its own shard
        for step in range(STEPS):
            optimizer.zero_grad()
            outputs = model(x)
            loss = F.cross_entropy(outputs, y)
            loss.backward()  # gradients are averaged across the ranks here
            optimizer.step()
            monitor.step(model, step, optimizer, loss=loss, outputs=outputs, targets=y)
        monitor.step(model, STEPS - 1, optimizer, force=True)
        if rank != 0:
            assert monitor.store is None and monitor._writer is None
        monitor.close()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_only_rank_zero_writes_and_every_record_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "ddp.sqlite"
    context = mp.start_processes(_worker, args=(_free_port(), str(path)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 300  # a bound against a hang, not a speed threshold
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the distributed run did not finish")
    with Store(path, readonly=True) as store:
        assert store.runs() == ["ddp"]
        results = store.results(run="ddp")
        assert not results.duplicated(["step", "probe"]).any()  # each record exactly once
        assert sorted(results[results.probe == "monitor"].step) == [0, 3, 6, 9, 11]  # 11: forced
        assert sorted(results[results.probe == "metrics"].step) == [0, 4, 8, 11]  # 11: the forced final call
        assert [step for step, _, _ in store.checkpoints("ddp")] == [0, 4, 6, 8, 11]
        assert store.errors().empty
        scalars = store.scalars(run="ddp", probe="monitor", keys=["train_loss"])
        assert len(scalars) == 5
