"""Wall time of a 2-D loss surface: ``probes.slices.slice_2d`` vs the PyPI ``loss-landscapes`` package vs
the bare forward passes the grid needs (the floor), on the same model, data and grid, in one run.

The floor is ``steps_x × steps_y`` evaluations of the loss over the same data with no weight changes
(under ``torch.inference_mode()``): no landscape tool that evaluates every grid point can beat it
without changing what it measures. The methods are run in alternation for ``--rounds`` rounds (in rotated order)
and the fastest round of each is reported, which damps the noise of a shared machine.

``loss-landscapes`` (3.0.6) is timed as it is; its plane differs from ours (uniform [0, 1) directions,
zig-zag columns, no centre point for odd step counts), so only its time is comparable.

    python benchmarks/slices_vs_loss_landscapes.py            # 25 × 25 grid, 256 images (a few minutes)
    python benchmarks/slices_vs_loss_landscapes.py --quick    # 9 × 9 grid
    python benchmarks/slices_vs_loss_landscapes.py --model mlp  # an MLP whose 784-input layer is factored
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from probes.slices import slice_2d


def make_model(kind: str = "cnn", seed: int = 0) -> nn.Module:
    """A small CNN (93,234 parameters) or MLP (89,050 parameters) for 1×28×28 inputs."""
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 112), nn.ReLU(), nn.Linear(112, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 56), nn.ReLU(), nn.Linear(56, 10),
    )


def make_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` scikit-learn digits (8×8) upsampled to 28×28."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:n] / 16.0, dtype=torch.float32).unsqueeze(1)
    x = nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x.contiguous(), torch.tensor(digits.target[:n], dtype=torch.long)


def floor(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, n_points: int) -> None:
    model.eval()
    with torch.inference_mode():
        for _ in range(n_points):
            float(loss_fn(model(x), y))


def ours(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, vectorize: bool,
         factor_input: bool | str = "auto") -> None:
    slice_2d(model, loss_fn, (x, y), steps=(steps, steps), span=(-1.0, 1.0, -1.0, 1.0), vectorize=vectorize,
             factor_input=factor_input)


def theirs(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(loss_fn, x, y)
    # It leaves the model perturbed and with requires_grad=False, so it gets its own copy.
    victim = copy.deepcopy(model).eval()
    loss_landscapes.random_plane(victim, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="9 × 9 grid instead of 25 × 25")
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--steps", type=int, default=None, help="grid points per axis (overrides --quick)")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-vmap", action="store_true", help="skip the vectorized (vmap) variant")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (9 if args.quick else 25)
    rounds = args.rounds or 3
    n_points = steps * steps
    model, loss_fn = make_model(args.model), nn.CrossEntropyLoss()
    x, y = make_data(args.samples)

    methods: dict[str, Callable[[], None]] = {
        "floor: bare forwards": lambda: floor(model, loss_fn, x, y, n_points),
        "landscape slice_2d (default)": lambda: ours(model, loss_fn, x, y, steps, False),
        "loss-landscapes random_plane": lambda: theirs(model, loss_fn, x, y, steps),
    }
    if args.model == "mlp":  # the default factors the 784-input first layer; show the plain loop too
        methods["landscape slice_2d (unfactored)"] = lambda: ours(model, loss_fn, x, y, steps, False, False)
    if not args.no_vmap:
        methods["landscape slice_2d (vmap)"] = lambda: ours(model, loss_fn, x, y, steps, True)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    floor(model, loss_fn, x, y, 3)  # warm-up: allocator, kernels
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotated: no method always goes first
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model was changed"

    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model.upper()} {params:,} params, {len(x)} inputs 1×28×28, grid {steps}×{steps} = {n_points} points, "
          f"{torch.get_num_threads()} threads, {rounds} alternating rounds (rotated order)")
    floor_times = np.array(times["floor: bare forwards"])
    theirs_times = np.array(times["loss-landscapes random_plane"])
    print(f"{'method':32s} {'median s':>9s} {'ms/point':>9s} {'× floor':>8s} {'LL / this':>10s}   "
          "per round: × floor")
    for name, values in times.items():
        t = np.array(values)
        median = float(np.median(t))
        # Ratios within a round share the machine's load at that time: their median is the robust figure.
        vs_floor = t / floor_times
        speedup = float(np.median(theirs_times / t))
        print(f"{name:32s} {median:9.2f} {1e3 * median / n_points:9.2f} {float(np.median(vs_floor)):8.2f} "
              f"{speedup:9.2f}×   {' '.join(f'{v:.2f}' for v in vs_floor)}")
    print("(× floor and LL / this are medians of the per-round ratios; LL = loss-landscapes)")

if __name__ == "__main__":
    main()
