"""Checkpoint sweeps across the ranks of a process group: rank 0 alone touches the store.

Two ways to share the work (``--shard``):

``"data"``         (default) every rank measures every checkpoint on its shard of the samples; the probes'
                   measurements are summed over the ranks (data mode ``"replicated"``). Rank 0 runs the
                   ordinary single-process execution — skipping stored results, leases, partial rows,
                   writing each result — and tells the other ranks, one broadcast at a time, which
                   checkpoint to load and which probe to run; they compute alongside and write nothing.
``"checkpoints"``  rank r measures whole checkpoints ``r, r + W, …`` of the ones left to do, alone (data
                   mode ``"local"``); after each round the results are gathered to rank 0, which writes
                   them. Ranks left without a checkpoint say so and wait.

A result is written only once it is complete on every rank that took part, so a run killed on any rank
keeps what was committed (results, and the partial rows rank 0 saved) and a re-run computes the rest.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from landscape.checkpoints import Checkpoint, CheckpointError
from landscape.distributed.group import (
    DistributedError,
    all_gather_objects,
    broadcast_object,
    data_parallel,
    is_main,
    rank,
    world_size,
)
from landscape.leases import Leases
from landscape.runner import (
    Outcome,
    RunPlan,
    RunReport,
    _Execution,
    _learning_rate,
    _wants_optimizer,
    compute_one,
    load_checkpoint,
    saved_optimizer,
)
from landscape.store import Store

__all__ = ["SHARD_MODES", "execute_distributed"]

SHARD_MODES = ("data", "checkpoints")


def execute_distributed(plan: RunPlan, *, store: Store | None, run: str, shard: str = "data",
                        emit: Callable[[str], None] | None = None, **options: Any) -> RunReport:
    """:func:`landscape.runner.execute_run` on every rank of the current process group.

    ``store`` is used on rank 0 only (pass None elsewhere). Every rank returns the run's report as rank 0
    counted it.
    """
    if shard not in SHARD_MODES:
        raise ValueError(f"shard must be one of {SHARD_MODES}, got {shard!r}.")
    if is_main() and store is None:
        raise ValueError("rank 0 writes the results: it needs the store.")
    emit = emit or (lambda text: print(text, file=sys.stderr))
    if shard == "data":
        with data_parallel("replicated"):
            report = _lead(plan, store, run, emit, options) if is_main() else _follow(plan, options)
    else:
        with data_parallel("local"):
            report = _by_checkpoint(plan, store, run, emit, options)
    return broadcast_object(report, "sharing the run's report")


# -- shard "data": rank 0 leads, the others follow ------------------------------------------------


class _Leader(_Execution):
    """The single-process execution, announcing each checkpoint load and probe run to the other ranks."""

    def _load(self, checkpoint: Checkpoint) -> None:
        broadcast_object(("load", self.plan.checkpoints.index(checkpoint)), "announcing a checkpoint")
        super()._load(checkpoint)

    def _run_one(self, name: str, checkpoint: Checkpoint, digest: str, lr: float | None,
                 optimizer_state: Any = None) -> None:
        broadcast_object(("run", name, self.plan.checkpoints.index(checkpoint), lr), "announcing a probe")
        super()._run_one(name, checkpoint, digest, lr, optimizer_state)


def _execution(cls: type[_Execution], plan: RunPlan, store: Store, run: str, emit: Callable[[str], None],
               options: dict[str, Any]) -> _Execution:
    from landscape.leases import DEFAULT_TTL

    return cls(plan, store, run, options.get("lr"), bool(options.get("recompute")), bool(options.get("reuse")),
               bool(options.get("unsafe")), bool(options.get("progress", True)), emit,
               Leases(store, float(options.get("lease_ttl", DEFAULT_TTL))), float(options.get("poll_seconds", 0.5)))


def _lead(plan: RunPlan, store: Store, run: str, emit: Callable[[str], None], options: dict[str, Any]) -> RunReport:
    try:
        report = _execution(_Leader, plan, store, run, emit, options).run()
    except DistributedError:
        raise  # the group is gone: nobody is left to tell
    except BaseException:
        broadcast_object(("stop",), "ending the run")  # an interrupt or a bug here: release the other ranks
        raise
    broadcast_object(("stop",), "ending the run")
    return report


def _follow(plan: RunPlan, options: dict[str, Any]) -> RunReport:
    """Do what rank 0 announces until it says stop; compute alongside it, write nothing."""
    unsafe = bool(options.get("unsafe"))
    optimizer: dict[int, Any] = {}  # the loaded checkpoint's optimizer state, read once when a probe needs it
    while True:
        command = broadcast_object(None, "waiting for rank 0's next task")
        if command[0] == "stop":
            return RunReport()
        if command[0] == "load":  # rank 0 announces every load before the probes run on it
            optimizer.clear()
            try:
                load_checkpoint(plan, plan.checkpoints[command[1]], unsafe)
            except CheckpointError:
                pass  # rank 0 failed on the same file, records the error and announces no probe for it
            continue
        _, name, index, lr = command
        checkpoint = plan.checkpoints[index]
        if _wants_optimizer(plan, [name]) and index not in optimizer:
            optimizer[index] = saved_optimizer(checkpoint, unsafe)
        compute_one(plan, name, checkpoint, lr, optimizer.get(index), partial=None, progress=False, unsafe=unsafe,
                    run="")


# -- shard "checkpoints": whole checkpoints per rank, written by rank 0 ----------------------------


class _Collector(_Execution):
    """Rank 0's bookkeeping for the checkpoint-sharded sweep: what to do, and writing what ranks found."""

    def plan_work(self) -> list[tuple[int, str, list[str]]]:
        """(checkpoint index, digest, probes leased to this run) for every checkpoint with work left."""
        work = []
        for index, checkpoint in enumerate(self.plan.checkpoints):
            digest = self._digest(checkpoint)
            if digest is None:
                continue
            todo = self._todo(checkpoint, digest)
            mine = self._claim(checkpoint, digest, todo) if todo else []
            if mine:
                work.append((index, digest, mine))
        return work

    def write(self, index: int, digest: str, outcomes: dict[str, Outcome] | str) -> None:
        checkpoint = self.plan.checkpoints[index]
        if isinstance(outcomes, str):  # the checkpoint could not be loaded
            self._checkpoint_error(checkpoint, list(self.plan.probes), outcomes, release=True)
            return
        self.store.add_checkpoint(self.run_name, checkpoint.step, checkpoint.path, digest)
        lr = _learning_rate(self.lr, checkpoint, self.unsafe)
        if lr is not None and self.lr is None:
            self.store.add_run(self.run_name, {"lr": lr})
        for name, outcome in outcomes.items():
            self._record(name, checkpoint, digest, outcome)
            self.bar.update(1)


def _by_checkpoint(plan: RunPlan, store: Store | None, run: str, emit: Callable[[str], None],
                   options: dict[str, Any]) -> RunReport:
    collector = _execution(_Collector, plan, store, run, emit, options) if is_main() else None
    with ExitStack() as stack:
        if collector is not None:
            store.add_run(run, {"lr": options["lr"]} if options.get("lr") is not None else {})
            stack.enter_context(collector.leases.heartbeat())
            stack.callback(collector.bar.close)
        work = broadcast_object(collector.plan_work() if collector is not None else None, "sharing the work")
        me, world = rank(), world_size()
        mine = work[me::world]
        if not mine and work:
            print(f"rank {me} of {world}: idle, the {len(work)} checkpoint(s) left to measure are fewer than the "
                  f"{world} ranks.", file=sys.stderr)
        for round_index in range(math.ceil(len(work) / world)):
            found = None
            if round_index < len(mine):
                index, digest, names = mine[round_index]
                found = (index, digest, _measure_checkpoint(plan, index, names, collector, options, run))
            gathered = all_gather_objects(found, "gathering a round of checkpoints")
            if collector is not None:
                for item in gathered:
                    if item is not None:
                        collector.write(*item)
        if collector is None:
            return RunReport()
        collector._wait_for_others()
    collector._notes()
    return collector.report


def _measure_checkpoint(plan: RunPlan, index: int, names: list[str], collector: _Collector | None,
                        options: dict[str, Any], run: str) -> dict[str, Outcome] | str:
    """Every probe in ``names`` at checkpoint ``index`` on this rank alone (rank 0 saves partial rows)."""
    unsafe = bool(options.get("unsafe"))
    checkpoint = plan.checkpoints[index]
    try:
        load_checkpoint(plan, checkpoint, unsafe)
    except CheckpointError as error:
        return str(error)
    lr = _learning_rate(options.get("lr"), checkpoint, unsafe)
    optimizer_state = saved_optimizer(checkpoint, unsafe) if _wants_optimizer(plan, names) else None
    outcomes = {}
    for name in names:
        partial = None if collector is None else collector.store.partial(run, checkpoint.step, name,
                                                                          plan.hashes[name])
        outcomes[name] = compute_one(plan, name, checkpoint, lr, optimizer_state, partial=partial,
                                     progress=bool(options.get("progress", True)) and collector is not None,
                                     unsafe=unsafe, run=run)
    return outcomes
