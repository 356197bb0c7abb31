"""The sharpness probe at its defaults on an 11M-parameter ResNet-18: time per measure and peak memory.

ResNet-18 (the test suite's own, 11.2M parameters, BatchNorm in eval mode) on 32 random 3×32×32 images,
the probe's default budget: the worst-case ascent (10 steps) on the plain and the adaptive ball, the
one-step SAM estimate, the average case (10 antithetic pairs), first-order flatness (10 steps) and, with a
learning rate, λ_max (Lanczos, tol 1e-5 on the eigenvalue) and the trace (Hutch++, 100 products). Each
measure is timed on its own, then the whole probe once; the peak is the process's resident set.

Accuracy of each estimate, as the probe defines it: the ascents return the best of their iterates (a
lower bound of the maximum on a non-convex loss), the average case is a Monte Carlo mean of 20 losses,
λ_max carries Lanczos's error estimate (≤ 1e-5 relative) and the trace Hutch++'s standard error, printed
beside it.

    python benchmarks/sharpness_scale.py            # 32×32 images (a few minutes on 2 CPU cores)
    python benchmarks/sharpness_scale.py --quick    # 16×16 images
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages and test models
from landscape.data import as_batches  # noqa: E402
from landscape.memory import resident_peak_mb  # noqa: E402
from probes import hessian  # noqa: E402
from probes import sharpness as S  # noqa: E402
from probes.base import ProbeContext  # noqa: E402
from tests.real_models import images, resnet18  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16×16 images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = 16 if args.quick else 32
    model, loss_fn = resnet18(num_classes=10, width=64), nn.CrossEntropyLoss()
    x, y = images(32, size=size)
    data = as_batches((x, y))
    n = sum(p.numel() for p in model.parameters())
    print(f"ResNet-18, {n / 1e6:.1f}M parameters, 32 images 3×{size}×{size}, {torch.get_num_threads()} threads; "
          "the sharpness probe's defaults")
    print(f"{'measure':<24} {'seconds':>8}  value")
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731 — the probe's seed for every measure
    defaults = S.PROBE.defaults
    rho, steps = defaults["rho"], defaults["steps"]
    with S._point(model, loss_fn, data) as point:
        measures = {
            "loss and gradient": lambda: (point.loss(), S._norm(point.gradient()))[1],
            "worst case": lambda: S._worst_case(point, rho, None, steps, generator()),
            "worst case, adaptive": lambda: S._worst_case(point, rho, point.scale(defaults["eta"]), steps,
                                                          generator()),
            "one-step SAM": lambda: S._sam_one_step(point, rho, None, point.gradient()),
            "average case": lambda: S._average_case(point, defaults["sigma"], defaults["n_samples"], False,
                                                    generator()),
            "first-order flatness": lambda: S._first_order_flatness(point, rho, steps, generator(),
                                                                    point.gradient()),
        }
        for name, measure in measures.items():
            start = time.perf_counter()
            value = measure()
            print(f"{name:<24} {time.perf_counter() - start:>8.1f}  {value:.4g}", flush=True)
    start = time.perf_counter()
    top = hessian.eigenvalues(model, loss_fn, data, k=1)
    print(f"{'lambda_max':<24} {time.perf_counter() - start:>8.1f}  {top.values[0]:.4g} ({top.n_hvp} products)",
          flush=True)
    start = time.perf_counter()
    trace = hessian.trace(model, loss_fn, data)
    print(f"{'trace (Hutch++)':<24} {time.perf_counter() - start:>8.1f}  {trace.value:.4g} ± {trace.stderr:.2g} "
          f"({trace.n_hvp} products)", flush=True)
    context = ProbeContext(model=model, loss_fn=loss_fn, train=data, lr=0.1)
    start = time.perf_counter()
    result = S.PROBE.run(context, **defaults)
    print(f"{'the whole probe':<24} {time.perf_counter() - start:>8.1f}  {len(result.scalars)} scalars, "
          f"valid={result.valid}")
    print(f"peak resident set: {resident_peak_mb() / 1024:.1f} GiB")


if __name__ == "__main__":
    main()
