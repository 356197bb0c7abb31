"""Cost of ``landscape.callbacks.Monitor`` on a training loop, as a ratio to the same loop without it.

The loop is the hardest case for any per-step cost: scikit-learn digits, a [64 → 256 → 10] MLP, batches of
128, SGD with momentum — about half a millisecond per step on one CPU thread. The monitor records its cheap
scalars (no registered probes) every 1, 10 and 100 steps, from the step's own loss, logits and targets
("outputs"), and every 10 steps from a forward pass over a fixed 512-sample subset ("subset"); its records
go to a run store through the background writer, as in training.

Variants alternate within each repeat (their order rotating), and each is compared with the plain loop of
its own repeat, so slow phases of a shared machine hit both sides of every ratio; the table gives the
median over repeats. Columns:

* ``wall ×``: wall-clock time per step over the plain loop's (the "without again" row, a second plain loop,
  shows the noise floor of this column);
* ``cpu ×``: the process's CPU time (every thread: the writer's work included) over the plain loop's —
  far less sensitive to other processes on the machine;
* ``in step %``: the time spent inside ``monitor.step`` on the training thread, as a share of the plain step;
* ``µs/record``: the wall time a record adds, (with − without) per step × cadence; it is larger than the
  time inside ``monitor.step``, because the training code runs slower for a while after a record (its
  caches refilled). Like the plain step (0.3–0.9 ms here as the shared machine's load varies), it grows
  on a loaded machine, so the ratios are the figures to compare between runs.

``--full-batch`` adds the grokking example's loop (modular addition, full-batch AdamW, tens of ms per step).

    python benchmarks/callback_overhead.py [--quick] [--steps 2000] [--repeats 5] [--threads 1] [--full-batch]
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

Loop = Callable[[int, "Monitor | None", bool], tuple[float, float, float]]


def _timed(steps: int, step: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
           model: nn.Module, optimizer: torch.optim.Optimizer, monitor: Monitor | None,
           pass_outputs: bool) -> tuple[float, float, float]:
    """(wall s/step, CPU s/step, s/step inside ``monitor.step``) of ``steps`` training steps; the monitor's
    close (its last commit) is counted in, its one-time opening of the store (a few ms, once per training
    run) is not."""
    if monitor is not None:
        monitor.store  # noqa: B018 — opens the store and starts the writer before the clock starts
    inside = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(steps):
        loss, outputs, targets = step(index)
        if monitor is not None:
            entered = time.perf_counter()
            if pass_outputs:
                monitor.step(model, index, optimizer, loss=loss, outputs=outputs, targets=targets)
            else:
                monitor.step(model, index, optimizer)
            inside += time.perf_counter() - entered
    if monitor is not None:
        monitor.close()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps, inside / steps


def digits_loop(batch_size: int = 128, hidden: int = 256) -> tuple[Loop, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)

    def run(steps: int, monitor: Monitor | None, pass_outputs: bool) -> tuple[float, float, float]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        order = torch.randperm(len(y))

        def step(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            batch = order[(index * batch_size) % (len(y) - batch_size):][:batch_size]
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x[batch])
            loss = F.cross_entropy(outputs, y[batch])
            loss.backward()
            optimizer.step()
            return loss, outputs, y[batch]

        return _timed(steps, step, model, optimizer, monitor, pass_outputs)

    return run, (x, y)


def modular_addition_loop(modulus: int = 97) -> tuple[Loop, tuple[torch.Tensor, torch.Tensor]]:
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.cat([F.one_hot(a, modulus), F.one_hot(b, modulus)], dim=1).float()
    y = (a + b) % modulus
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: len(y) // 2]
    x, y = x[keep], y[keep]

    def run(steps: int, monitor: Monitor | None, pass_outputs: bool) -> tuple[float, float, float]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2 * modulus, 200, bias=False), nn.ReLU(), nn.Linear(200, 200, bias=False),
                              nn.ReLU(), nn.Linear(200, modulus, bias=False))
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.98), weight_decay=0.0)

        def step(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x)
            loss = F.cross_entropy(outputs, y)
            loss.backward()
            optimizer.step()
            return loss, outputs, y

        return _timed(steps, step, model, optimizer, monitor, pass_outputs)

    return run, (x, y)


def measure(name: str, loop: Loop, data: tuple, steps: int, repeats: int, folder: Path,
            cadences: tuple[int, ...]) -> list[tuple]:
    """Rows (loop, variant, ms/step plain, ms/step with, wall ×, cpu ×, in step %), medians over repeats."""
    variants: dict[str, tuple[int | None, bool]] = {"without": (None, True), "without again": (None, True)}
    variants.update({f"outputs, every {c}": (c, True) for c in cadences})
    variants["subset, every 10"] = (10, False)
    samples: dict[str, list[tuple[float, float, float, float, float]]] = {v: [] for v in variants}
    loop(max(steps // 5, 50), None, True)  # warm-up: allocator, kernels, lazy imports
    names = list(variants)
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        times = {}
        for variant in order:
            cadence, pass_outputs = variants[variant]
            monitor = None
            if cadence is not None:
                monitor = Monitor(folder / f"{name}.sqlite", f"{variant}-{repeat}", every=cadence, data=data,
                                  loss_fn=F.cross_entropy)
            times[variant] = loop(steps, monitor, pass_outputs)
        wall0, cpu0, _ = times["without"]
        for variant, (wall, cpu, inside) in times.items():
            samples[variant].append((wall0, wall, wall / wall0, cpu / cpu0, inside / wall0))
    rows = []
    for variant in names[1:]:
        columns = list(zip(*samples[variant]))
        plain, wall, wall_ratio, cpu_ratio, inside = (statistics.median(c) for c in columns)
        cadence = variants[variant][0]
        extra = statistics.median(w - p for p, w, *_ in samples[variant])  # per step, paired by repeat
        per_record = extra * cadence * 1e6 if cadence else float("nan")
        rows.append((name, variant, plain * 1e3, wall * 1e3, wall_ratio, cpu_ratio, 100.0 * inside, per_record))
    return rows


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description="Step-time cost of the training Monitor, as ratios to the bare loop.")
    parser.add_argument("--steps", type=int, default=3000, help="steps per timed loop (the full-batch loop: 1/20)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a steady step)")
    parser.add_argument("--full-batch", action="store_true", help="also time the full-batch modular-addition loop")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (about a minute)")
    args = parser.parse_args(argv)
    steps, repeats = (1000, 3) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(args.threads)
    cadences = (1, 10, 100)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); cheap scalars only (no probes); "
          f"median over {repeats} repeats, variants alternating")
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as folder:
        run, data = digits_loop()
        rows += measure("digits-minibatch", run, data, steps, repeats, Path(folder), cadences)
        if args.full_batch:
            run, data = modular_addition_loop()
            rows += measure("modadd-fullbatch", run, data, max(steps // 20, 20), repeats, Path(folder), (10,))
    print(f"\n{'loop':<18}{'variant':<20}{'ms/step without':>16}{'ms/step with':>14}{'wall ×':>9}{'cpu ×':>9}"
          f"{'in step %':>11}{'µs/record':>11}")
    for name, variant, plain, with_monitor, wall, cpu, inside, per_record in rows:
        print(f"{name:<18}{variant:<20}{plain:>16.3f}{with_monitor:>14.3f}{wall:>9.3f}{cpu:>9.3f}{inside:>11.2f}"
              f"{per_record:>11.0f}")
    print("\nwall ×, cpu ×: per-repeat ratios to the plain loop of the same repeat (compare 'without again', the "
          "noise floor);\nin step %: time inside monitor.step on the training thread, as a share of the plain step;\n"
          "µs/record: wall time added per record.")
    return rows


if __name__ == "__main__":
    main()
