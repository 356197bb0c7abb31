"""Overhead of the Krylov kernels over the operator products they call.

For MLPs of about 10k, 100k and 1M parameters on scikit-learn's digits (every batch's gradient graph
cached), runs Lanczos for the top-k eigenvalues and stochastic Lanczos quadrature, and times the
``matmat`` calls separately from the whole call. The ratio total / products is what the kernel's own
work (orthogonalization, projected solves, bookkeeping) adds: 1.0 would be free. Times are the
process's CPU time (all its threads), which a busy shared machine disturbs far less than wall-clock
time; one torch thread by default, so the two agree on an idle machine.

    python benchmarks/krylov_overhead.py            # k = 5 and 50, sizes 10k, 100k, 1M
    python benchmarks/krylov_overhead.py --quick    # k = 50 at 10k and 100k, k = 5 at 1M
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

from landscape.curvature import CurvatureOperator, lanczos, slq


class Timed:
    """An operator that forwards to another and adds up the wall-clock time of its products."""

    def __init__(self, op: CurvatureOperator) -> None:
        self.op = op
        self.size, self.dtype, self.device = op.size, op.dtype, op.device
        self.seconds = 0.0
        self.n_hvp = 0

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        start = time.process_time()
        out = self.op.matmat(vectors)
        self.seconds += time.process_time() - start
        self.n_hvp += vectors.shape[1]
        return out


def mlp(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(64, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def trained(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 20) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(128):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    sizes = {"10k": (120, 1), "100k": (300, 2), "1M": (700, 3)}
    plan = [("10k", 50), ("100k", 50), ("1M", 5)] if args.quick else [
        (s, k) for s in sizes for k in (5, 50)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits {len(x)} samples in 4 batches")
    print(f"{'model':>6} {'params':>9} {'kernel':>12} {'HVPs':>6} {'CPU s':>8} {'HVP CPU s':>10} {'total/HVP':>10}")
    batches = [(x[i : i + 450], y[i : i + 450]) for i in range(0, len(x), 450)]
    for name, k in plan:
        width, depth = sizes[name]
        model = trained(mlp(width, depth), x, y, epochs=3)
        with CurvatureOperator(model, nn.CrossEntropyLoss(), batches, cache_graph=True) as op:
            for label, run in ((f"lanczos k={k}", lambda t, k=k: lanczos(t, k, tol=1e-5)),
                               ("slq 8x40", lambda t: slq(t, 8, 40))):
                if label.startswith("slq") and k != plan[[p[0] for p in plan].index(name)][1]:
                    continue
                timed = Timed(op)
                op.matmat(torch.zeros(op.size, 1))  # builds and caches the graphs outside the timing
                start = time.process_time()
                run(timed)
                total = time.process_time() - start
                print(f"{name:>6} {op.size:>9,} {label:>12} {timed.n_hvp:>6} {total:>8.2f} {timed.seconds:>10.2f} "
                      f"{total / timed.seconds:>10.2f}", flush=True)
        del model


if __name__ == "__main__":
    main()
