"""Spawn local gloo ranks on 127.0.0.1: the launcher of the distributed tests and benchmarks.

Real runs use ``torchrun``; this starts ``world`` processes of one function on this machine, bounded in
time, and names the rank that failed, hung or died.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from landscape.distributed.group import DistributedError

__all__ = ["free_port", "run_ranks"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...],
               queue: Any, threads: int, collective_timeout_s: float) -> None:
    torch.set_num_threads(threads)
    os.environ["LANDSCAPE_DIST_TIMEOUT"] = str(collective_timeout_s)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=collective_timeout_s))
        try:
            queue.put((rank, True, fn(rank, world, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException as error:  # noqa: BLE001 - reported to the parent, with the rank
        queue.put((rank, False, f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}"))


def run_ranks(fn: Callable[..., Any], world: int, *args: Any, timeout_s: float = 120.0, threads_per_rank: int = 1,
              collective_timeout_s: float | None = None) -> list[Any]:
    """Run ``fn(rank, world, *args)`` in ``world`` spawned processes of one gloo group; their results by rank.

    ``fn`` must be importable (a module-level function) and return something picklable. Raises
    :class:`DistributedError` naming the rank when one raises, dies or is still running after
    ``timeout_s`` (the remaining processes are then killed).
    """
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    collective = collective_timeout_s if collective_timeout_s is not None else max(10.0, timeout_s / 2)
    procs = [context.Process(target=_rank_main, args=(r, world, port, fn, args, queue, threads_per_rank, collective),
                             daemon=True) for r in range(world)]
    for proc in procs:
        proc.start()
    results: dict[int, Any] = {}
    failures: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) + len(failures) < world and time.monotonic() < deadline:
            try:
                rank, ok, value = queue.get(timeout=0.2)
            except Exception:  # noqa: BLE001 - queue.Empty: look for dead processes
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)
                        and r not in results and r not in failures]
                for r in dead:
                    failures[r] = f"the process died with exit code {procs[r].exitcode}"
                continue
            (results if ok else failures)[rank] = value
    finally:
        for proc in procs:
            proc.join(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
            if proc.is_alive():
                proc.kill()
                proc.join()
    if failures:
        first = min(failures)
        raise DistributedError(f"rank {first} of {world} failed: {failures[first]}")
    missing = [r for r in range(world) if r not in results]
    if missing:
        raise DistributedError(f"rank(s) {missing} of {world} did not finish within {timeout_s:.0f} s.")
    return [results[r] for r in range(world)]
