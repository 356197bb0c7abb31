"""Step-time overhead of ``landscape.callbacks.Monitor`` at its default cadence (cheap scalars only).

Two training loops, each timed without a monitor and with one (``every=10``, no registered probes):

* ``modadd-fullbatch`` — modular addition (p = 97, half the pairs), bias-free [200, 200] ReLU MLP,
  full-batch AdamW: the grokking example's loop (tens of milliseconds per step on a CPU).
* ``digits-minibatch`` — scikit-learn digits, [64 → 128 → 10] MLP, mini-batches of 64, SGD: a loop whose
  steps take well under a millisecond, the hardest case for any per-step overhead.

"with (outputs)" passes the step's loss, logits and targets to ``monitor.step`` (no extra work beyond
the scalars); "with (subset)" passes nothing, so the monitor runs one forward pass on a fixed subset of
512 training samples at each record; a third variant records ten times less often. Repeats alternate
between the variants and the table reports medians, so slow phases of a shared machine hit every variant
alike. Two columns: the wall-clock overhead (difference of median step times, as noisy as the machine —
the "without again" row, a second plain loop, shows that noise) and the time spent inside
``monitor.step`` as a share of the plain step (a direct, far less noisy measure of the same cost).

    python benchmarks/callback_overhead.py [--steps 300] [--repeats 5] [--every 10] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from landscape.callbacks import Monitor
from landscape.store import Store

Loop = Callable[[int, Monitor | None, bool], tuple[float, float]]


def modular_addition_loop(modulus: int = 97) -> tuple[Loop, tuple[torch.Tensor, torch.Tensor]]:
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.cat([F.one_hot(a, modulus), F.one_hot(b, modulus)], dim=1).float()
    y = (a + b) % modulus
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: len(y) // 2]
    x, y = x[keep], y[keep]

    def run(steps: int, monitor: Monitor | None, pass_outputs: bool) -> float:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2 * modulus, 200, bias=False), nn.ReLU(), nn.Linear(200, 200, bias=False),
                              nn.ReLU(), nn.Linear(200, modulus, bias=False))
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.98), weight_decay=0.0)
        inside = 0.0
        start = time.perf_counter()
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x)
            loss = F.cross_entropy(outputs, y)
            loss.backward()
            optimizer.step()
            if monitor is not None:
                entered = time.perf_counter()
                if pass_outputs:
                    monitor.step(model, step, optimizer, loss=loss, outputs=outputs, targets=y)
                else:
                    monitor.step(model, step, optimizer)
                inside += time.perf_counter() - entered
        return (time.perf_counter() - start) / steps, inside / steps

    return run, (x, y)


def digits_loop(batch_size: int = 64) -> tuple[Loop, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)

    def run(steps: int, monitor: Monitor | None, pass_outputs: bool) -> float:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        order = torch.randperm(len(y))
        inside = 0.0
        start = time.perf_counter()
        for step in range(steps):
            index = order[(step * batch_size) % (len(y) - batch_size):][:batch_size]
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x[index])
            loss = F.cross_entropy(outputs, y[index])
            loss.backward()
            optimizer.step()
            if monitor is not None:
                entered = time.perf_counter()
                if pass_outputs:
                    monitor.step(model, step, optimizer, loss=loss, outputs=outputs, targets=y[index])
                else:
                    monitor.step(model, step, optimizer)
                inside += time.perf_counter() - entered
        return (time.perf_counter() - start) / steps, inside / steps

    return run, (x, y)


def measure(name: str, loop: Loop, data: tuple, steps: int, repeats: int, every: int, store: Store) -> list[tuple]:
    """Median ms/step without and with a monitor, and the share of the step spent inside ``monitor.step``.

    Two plain variants ("without", "without again") alternate with the monitored ones: their difference
    shows how much two identical loops differ on this machine (the noise floor of the wall-clock column).
    """
    variants = {
        "without": (None, True), "with (outputs)": (every, True), "with (subset)": (every, False),
        "without again": (None, True), f"outputs, every {10 * every}": (10 * every, True),
    }
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    loop(max(steps // 10, 5), None, True)  # warm-up: allocator, kernels, lazy imports
    for repeat in range(repeats):
        for variant, (cadence, pass_outputs) in variants.items():
            monitor = None
            if cadence is not None:
                monitor = Monitor(store, f"{name}-{variant}-{repeat}", every=cadence, data=data, loss_fn=F.cross_entropy)
            times[variant].append(loop(steps, monitor, pass_outputs))
    base = statistics.median(t for t, _ in times["without"])
    rows = []
    for variant in variants:
        if variant == "without":
            continue
        total = statistics.median(t for t, _ in times[variant])
        inside = statistics.median(i for _, i in times[variant])
        rows.append((name, variant, steps, base * 1e3, total * 1e3, 100.0 * (total - base) / base, 100.0 * inside / base))
    return rows


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description="Step-time overhead of the training Monitor (cheap scalars only).")
    parser.add_argument("--steps", type=int, default=300, help="steps per timed loop (digits runs 10x as many)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=10, help="monitor cadence (the default is 10)")
    parser.add_argument("--quick", action="store_true", help="few steps and repeats (a smoke run)")
    args = parser.parse_args(argv)
    steps, repeats = (20, 1) if args.quick else (args.steps, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; monitor every {args.every} steps; "
          f"median of {repeats} alternating repeats")
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "overhead.sqlite") as store:
        run, data = modular_addition_loop()
        rows += measure("modadd-fullbatch", run, data, steps, repeats, args.every, store)
        run, data = digits_loop()
        rows += measure("digits-minibatch", run, data, steps * 10, repeats, args.every, store)
    print(f"\n{'loop':<18}{'variant':<22}{'steps':>7}{'ms/step without':>17}{'ms/step with':>14}"
          f"{'wall overhead %':>17}{'in monitor %':>14}")
    for name, variant, n, without, with_monitor, overhead, inside in rows:
        print(f"{name:<18}{variant:<22}{n:>7}{without:>17.3f}{with_monitor:>14.3f}{overhead:>17.1f}{inside:>14.2f}")
    print("\nwall overhead: difference of median step times (compare the 'without again' row: the noise floor);"
          "\nin monitor: median time spent inside monitor.step, as a share of the plain step time.")
    return rows


if __name__ == "__main__":
    main()
