"""Data-parallel speed-up of a 2-D loss grid and of top-k Lanczos on 1, 2 (and more) ranks.

A small CNN on many 16×16 images (about 25k parameters, 2048 samples by default), so that the passes over
the data dominate and the Krylov vectors are cheap: the regime where sharing the samples among ranks
pays. Each configuration runs in freshly spawned gloo processes on 127.0.0.1 (one torch thread per rank)
and is timed inside the ranks, without process start-up; the figure is the slowest rank's time. The
single-process runs are measured in the same script, side by side:

* ``1 rank × 1 thread``: the baseline of the speed-up (same work per thread);
* ``1 rank × W threads``: what one process gets from intra-op threads on the same cores.

Every rank's answer is checked against the single process's (the top eigenvalues to 1e-6 relative in
float32, the grid to 1e-5).

    python benchmarks/distributed_scaling.py            # 1, 2 ranks (and 4 when the machine has 4+ cores)
    python benchmarks/distributed_scaling.py --quick    # smaller data, 1 and 2 ranks
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch import nn

from landscape.distributed import data_parallel
from landscape.distributed.launch import run_ranks


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    ).eval()


def data(n: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 16, 16, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def job(rank: int, world: int, task: str, n: int, batch: int, threads: int, steps: int) -> tuple[float, np.ndarray]:
    """Time ``task`` on this rank (the data replicated, each rank measuring its shard)."""
    from probes import hessian
    from probes.slices import slice_2d

    torch.set_num_threads(threads)
    model, batches, loss = cnn(), data(n, batch), nn.CrossEntropyLoss()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # start the clocks together: no rank's set-up is counted as the others' wait
    with data_parallel("replicated"):
        start = time.perf_counter()
        if task == "grid":
            out = np.asarray(slice_2d(model, loss, batches, steps=(steps, steps), seed=1, vectorize=False).loss)
        else:
            out = np.asarray(hessian.eigenvalues(model, loss, batches, k=3, tol=1e-3, max_iter=30).values)
        return time.perf_counter() - start, out


def measure(task: str, world: int, threads: int, args: argparse.Namespace) -> tuple[float, np.ndarray]:
    results = run_ranks(job, world, task, args.samples, args.batch, threads, args.steps, timeout_s=3600,
                        threads_per_rank=threads, collective_timeout_s=600)
    return max(seconds for seconds, _ in results), results[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024 samples, a 7×7 grid, 1 and 2 ranks")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="grid points per axis")
    args = parser.parse_args()
    args.samples = args.samples or (1024 if args.quick else 2048)
    args.steps = args.steps or (7 if args.quick else 11)
    cores = os.cpu_count() or 1
    worlds = [2] if args.quick or cores < 4 else [2, 4]
    print(f"CNN of {sum(p.numel() for p in cnn().parameters()):,} parameters, {args.samples} samples in batches "
          f"of {args.batch}; {cores} cores")
    print(f"{'task':<26} {'configuration':<22} {'seconds':>8} {'speed-up':>9}  agrees")
    for task, label in (("grid", f"2-D grid {args.steps}×{args.steps}"), ("lanczos", "top-3 Lanczos, tol 1e-3")):
        base, want = measure(task, 1, 1, args)
        print(f"{label:<26} {'1 rank × 1 thread':<22} {base:>8.2f} {1.0:>9.2f}")
        for world in worlds:
            threaded, got = measure(task, 1, world, args)
            print(f"{'':<26} {f'1 rank × {world} threads':<22} {threaded:>8.2f} {base / threaded:>9.2f}  "
                  f"{_agrees(got, want)}")
            seconds, got = measure(task, world, 1, args)
            print(f"{'':<26} {f'{world} ranks × 1 thread':<22} {seconds:>8.2f} {base / seconds:>9.2f}  "
                  f"{_agrees(got, want)}")


def _agrees(got: np.ndarray, want: np.ndarray) -> str:
    error = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))
    return f"yes ({error:.0e})" if error < 1e-5 else f"NO ({error:.0e})"


if __name__ == "__main__":
    main()
