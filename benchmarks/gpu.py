"""GPU side by side: our curvature and loss grids against PyHessian and loss-landscapes on one CUDA device.

Everything runs in one process on the same model, data and device, and the table prints ratios (their time
over ours), so the figures do not depend on how fast the machine is:

* top-3 Hessian eigenvalues at PyHessian's own tolerance (1e-3): ``probes.hessian.eigenvalues`` (block
  Lanczos on Ritz residuals) vs ``pyhessian.hessian(...).eigenvalues(top_n=3)`` (power iteration with
  deflation), with the relative gap between the two λ₁;
* the Hessian trace: Hutch++ with 100 products vs PyHessian's Hutchinson loop (tol 1e-3, at most 100);
* a 2-D loss surface (filter-normalized random plane): ``probes.slices.slice_2d`` — many grid points per
  launch on CUDA (vmap) — vs ``loss_landscapes.random_plane``, and the bare forward passes the grid needs;
* the weight spectra of every layer (``probes.weights.layer_spectra``, when that probe is installed) on the
  GPU;
* the training ``Monitor`` at ``every=10`` on a launch-bound loop (an MLP [64 → 256 → 10], batches of 128),
  as a ratio to the same loop without it (plain and monitored loops alternating, median of the repeats).

The model is a small ResNet-style CNN on 32×32 synthetic images (no download). Timings synchronize the
device; each method runs once after a warm-up pass.

    python benchmarks/gpu.py            # on a CUDA machine: about 2–4 minutes on one H200
    python benchmarks/gpu.py --quick    # smaller data and grid (also runs on a CPU, for a smoke test)
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    """A basic residual block: two 3×3 convolutions with BatchNorm and an identity (or 1×1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def make_model(width: int) -> nn.Module:
    """A ResNet-style CNN for 3×32×32 inputs and 10 classes (about 0.7M parameters at width 32)."""
    torch.manual_seed(0)
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))


def make_data(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-mixture images: each class a fixed random mean image plus noise, so the loss is learnable."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = means[y] + 0.8 * torch.randn(n, 3, 32, 32, generator=g)
    return x.to(device), y.to(device)


def warm_up(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    """A few SGD steps so the measured point is not the random initialization; then eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(steps):
        j = slice((i * 128) % len(x), (i * 128) % len(x) + 128)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[j]), y[j]).backward()
        opt.step()
    return model.eval()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def pyhessian_top(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, cuda: bool) -> tuple[np.ndarray, int]:
    from pyhessian import hessian as PyHessian

    engine = PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=cuda)
    values, _ = engine.eigenvalues(maxIter=100, tol=1e-3, top_n=k)
    for p in model.parameters():  # it leaves graph-attached gradients behind
        p.grad = None
    return np.sort(np.asarray(values, dtype=float))[::-1], -1


def pyhessian_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cuda: bool) -> tuple[float, int]:
    from pyhessian import hessian as PyHessian

    engine = PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=cuda)
    samples = engine.trace(maxIter=100, tol=1e-3)
    for p in model.parameters():
        p.grad = None
    return float(np.mean(samples)), len(samples)


def floor(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_points: int) -> None:
    with torch.inference_mode():
        total = torch.zeros((), device=x.device)
        for _ in range(n_points):
            total += nn.functional.cross_entropy(model(x), y)
        float(total)


def loss_landscapes_plane(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), x, y)
    victim = copy.deepcopy(model).eval()  # it leaves the model perturbed
    loss_landscapes.random_plane(victim, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=False)


def monitor_overhead(device: torch.device, steps: int, repeats: int = 3) -> tuple[float, float]:
    """(plain seconds per step, monitored over plain): the Monitor's cheap scalars every 10 steps from the
    step's own outputs, its store in a temporary folder; medians over alternating repeats."""
    import statistics
    import tempfile
    from pathlib import Path

    from landscape.callbacks import Monitor

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 64, generator=g).to(device)
    y = x[:, :10].argmax(dim=1)

    def loop(monitor: Monitor | None) -> float:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if monitor is not None:
            monitor.store  # noqa: B018 — opens the store before the clock starts

        def run() -> None:
            for i in range(steps):
                j = slice((i * 128) % 3968, (i * 128) % 3968 + 128)
                opt.zero_grad(set_to_none=True)
                out = model(x[j])
                loss = nn.functional.cross_entropy(out, y[j])
                loss.backward()
                opt.step()
                if monitor is not None:
                    monitor.step(model, i, opt, loss=loss, outputs=out, targets=y[j])
            if monitor is not None:
                monitor.close()

        return timed(run, device)[1] / steps

    loop(None)  # warm-up
    plain, ratios = [], []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            monitored = Monitor(Path(folder) / "monitor.sqlite", f"r{repeat}", every=10)
            if repeat % 2:
                with_monitor, without = loop(monitored), loop(None)
            else:
                without, with_monitor = loop(None), loop(monitored)
            plain.append(without)
            ratios.append(with_monitor / without)
    return statistics.median(plain), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 images, width 16, a 9 × 9 grid")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--grid", type=int, default=None, help="grid points per axis")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.samples or (256 if args.quick else 2048)
    width = args.width or (16 if args.quick else 32)
    steps = args.grid or (9 if args.quick else 25)

    from probes import hessian, slices

    x, y = make_data(n, device)
    model = warm_up(make_model(width).to(device), x, y, steps=20 if args.quick else 60)
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}; model {n_params:,} parameters; {n} images; "
          f"grid {steps}×{steps}", flush=True)
    rows: list[tuple[str, str, float, float, str]] = []

    hessian.eigenvalues(model, loss_fn, (x[:64], y[:64]), k=1, tol=1e-2)  # warm-up (kernels, allocator)
    ours_eig, t_ours = timed(lambda: hessian.eigenvalues(model, loss_fn, (x, y), k=3, tol=1e-3), device)
    (theirs_eig, _), t_theirs = timed(lambda: pyhessian_top(model, x, y, 3, device.type == "cuda"), device)
    gap = abs(ours_eig.values[0] - theirs_eig[0]) / abs(ours_eig.values[0])
    rows.append(("top-3 eigenvalues, tol 1e-3", "PyHessian", t_ours, t_theirs,
                 f"λ₁ {ours_eig.values[0]:.4g} vs {theirs_eig[0]:.4g} (gap {gap:.1e}); {ours_eig.n_hvp} HVPs ours"))
    print(f"  top-3: ours {t_ours:.2f} s, PyHessian {t_theirs:.2f} s", flush=True)

    ours_tr, t_ours = timed(lambda: hessian.trace(model, loss_fn, (x, y), n_matvec=100), device)
    (theirs_tr, n_theirs), t_theirs = timed(lambda: pyhessian_trace(model, x, y, device.type == "cuda"), device)
    rows.append(("trace", "PyHessian", t_ours, t_theirs,
                 f"Hutch++ {ours_tr.value:.4g} ± {ours_tr.stderr:.2g} ({ours_tr.n_hvp} HVPs) vs Hutchinson "
                 f"{theirs_tr:.4g} ({n_theirs} samples)"))
    print(f"  trace: ours {t_ours:.2f} s, PyHessian {t_theirs:.2f} s", flush=True)

    grid_x, grid_y = x[:512], y[:512]
    slices.slice_2d(model, loss_fn, (grid_x, grid_y), steps=(3, 3))  # warm-up
    _, t_floor = timed(lambda: floor(model, grid_x, grid_y, steps * steps), device)
    _, t_ours = timed(lambda: slices.slice_2d(model, loss_fn, (grid_x, grid_y), steps=(steps, steps)), device)
    _, t_theirs = timed(lambda: loss_landscapes_plane(model, grid_x, grid_y, steps), device)
    rows.append((f"2-D surface {steps}×{steps}, 512 images", "loss-landscapes", t_ours, t_theirs,
                 f"bare forward passes {t_floor:.2f} s ({t_floor / t_ours:.2f}× ours)"))
    print(f"  grid: ours {t_ours:.2f} s, loss-landscapes {t_theirs:.2f} s, floor {t_floor:.2f} s", flush=True)

    try:
        from probes import weights
    except ImportError:
        weights = None
    if weights is not None and hasattr(weights, "layer_spectra"):
        weights.layer_spectra(model)
        frame, t_w = timed(lambda: weights.layer_spectra(model), device)
        rows.append(("weight spectra, every layer", "—", t_w, float("nan"),
                     f"{len(frame)} matrices, median alpha {np.nanmedian(frame['alpha']):.3g}"))

    step_s, ratio = monitor_overhead(device, 1000 if args.quick else 3000)
    rows.append(("Monitor every 10, MLP loop (ms/step)", "—", step_s * ratio * 1e3, float("nan"),
                 f"{ratio:.3f}× the plain loop's {step_s * 1e3:.3f} ms per step"))
    print(f"  monitor: {ratio:.3f}× a {step_s * 1e3:.3f} ms step", flush=True)

    if device.type == "cuda":
        rows.append(("peak GPU memory", "—", torch.cuda.max_memory_allocated(device) / 2**30, float("nan"), "GiB"))
    print()
    print(f"{'measure':<38} {'anchor':<16} {'ours s':>9} {'theirs s':>9} {'ratio':>7}  notes")
    for what, anchor, ours_s, theirs_s, note in rows:
        ratio = theirs_s / ours_s if np.isfinite(theirs_s) and ours_s > 0 else float("nan")
        print(f"{what:<38} {anchor:<16} {ours_s:>9.3f} {theirs_s:>9.3f} {ratio:>6.1f}×  {note}")


if __name__ == "__main__":
    main()
