"""Hessian spectra: landscape vs PyHessian on the same CPU, in one run.

First the headline comparison: the top-3 eigenvalues of a 25,826-parameter CNN (conv-BN-ReLU ×2,
max-pool, MLP head) on 256 digits images in 2 batches of 128, both at tolerance 1e-3 (PyHessian's
default tol and maxIter=100; ours at its default for eigenvalues alone: the eigenvalues' estimated
relative error, and beside it the stricter rule on the relative Ritz residual, ``criterion="residual"``,
that returned vectors use), best of a few interleaved repeats
of each whole call, PyHessian's start vectors seeded alike every time. It reports the time ratio, the
Hessian-vector products each one spends, the relative difference of λ₁ and each one's error against
a float64 reference, and the cost of one product in gradients of the loss over the same data: counted
in FLOPs (``torch.utils.flop_counter``, deterministic) and timed (best of many), for our operator with
its graphs cached (the default on this data), rebuilt on every call (``cache_graph=False``), and for
PyHessian's ``dataloader_hv_product``.

Then the wider comparison: Two trained models on the digits data set (scikit-learn's 8×8 images, with noisy copies for a few
thousand samples, cut into batches of unequal size): a CNN with more than 100k parameters and a small
MLP. For each: top-1 and top-5 eigenvalues, the trace and the spectral density, by us and by PyHessian
(dataloader mode: every product re-runs forward and backward per batch, as ours does on several batches).
Accuracy is the relative error against a reference: our Lanczos to 1e-8 for eigenvalues; for the MLP
the exact trace (sum of the diagonal from n unit-vector products) and its exact spectrum.

PyHessian's ``density()`` crashes in version 0.1 (``torch.eig`` was removed), so its SLQ method runs
through ``probes.hessian.density(..., backend="pyhessian")``: its products and reorthogonalization,
with ``numpy.linalg.eigh`` for the tridiagonal matrices.

The trace estimator study runs on the MLP, whose Hessian after 60 epochs has a decaying spectrum (and,
for contrast, after 3 epochs a flatter one): the RMS relative error over seeds of Hutchinson, Hutch++
and XTrace at the same number of products against the exact trace, and how honest each one's stderr is.

    python benchmarks/hessian_vs_pyhessian.py                  # full (about 15 minutes, one thread)
    python benchmarks/hessian_vs_pyhessian.py --quick          # headline and MLP, fewer seeds (under 5 minutes)
    python benchmarks/hessian_vs_pyhessian.py --only target    # the headline comparison alone (about a minute)
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from landscape.curvature import CurvatureOperator, DenseOperator, hutch_plus_plus, hutchinson, lanczos, xtrace
from landscape.data import Batches, as_batches
from probes import hessian

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")


# --------------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------------


def digits(n_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits images scaled to [0, 1], plus noisy copies up to ``n_samples``."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [x], [y]
    while sum(len(t) for t in ys) < n_samples:
        xs.append((x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1))
        ys.append(y)
    x, y = torch.cat(xs)[:n_samples], torch.cat(ys)[:n_samples]
    order = torch.randperm(len(x), generator=generator)
    return x[order], y[order]


def make_cnn() -> nn.Module:
    """Conv-BN-ReLU ×2 and an MLP head: 136,682 parameters, most in the first linear layer."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def make_small_cnn() -> nn.Module:
    """Conv-BN-ReLU ×2, a 2×2 max-pool and an MLP head: 25,826 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 40), nn.ReLU(), nn.Linear(40, 10),
    )


def make_mlp() -> nn.Module:
    """64-64-10 with tanh: 4,810 parameters."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(128):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    model.eval()
    return model


def unequal_batches(x: torch.Tensor, y: torch.Tensor, size: int) -> Batches:
    """Batches of ``size`` with the last one smaller (unequal sizes, as a DataLoader would give)."""
    return as_batches([(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)])


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    task: str
    who: str
    n_hvp: int
    seconds: float
    error: float | None
    note: str = ""


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def relative_error(values: np.ndarray, reference: np.ndarray) -> float:
    values, reference = np.sort(np.asarray(values))[::-1], np.sort(np.asarray(reference))[::-1]
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


PYHESSIAN_TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


def pyhessian_eigen(model: nn.Module, data: Batches, k: int, tol: float) -> tuple[np.ndarray, int]:
    """PyHessian's own ``eigenvalues`` (power iteration with deflation), dataloader mode; its default
    tol is 1e-3 (relative change between iterations), maxIter raised from 100 to 1000."""
    max_iter = 100 if tol == PYHESSIAN_TOLS[0] else 1000
    result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), data, k=k, tol=tol, max_iter=max_iter,
                                 backend="pyhessian")
    return result.values, result.n_hvp


def pyhessian_trace(model: nn.Module, data: Batches) -> tuple[float, float, int]:
    """PyHessian's own ``trace()`` with its defaults (maxIter=100, tol=1e-3, its early-stopping rule)."""
    from pyhessian import hessian as PyHessian

    from landscape.params import preserved

    with preserved(model), torch.random.fork_rng():
        torch.manual_seed(0)
        engine = PyHessian(model, nn.CrossEntropyLoss(), dataloader=list(data), cuda=False)
        samples = np.asarray(engine.trace(), dtype=np.float64)
    return float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(len(samples))), len(samples)


def smoothed(spectrum: hessian.SpectralDensity, grid: np.ndarray, sigma: float) -> np.ndarray:
    return spectrum.curve(grid, sigma)


def l1(a: np.ndarray, b: np.ndarray, grid: np.ndarray) -> float:
    return float(np.trapezoid(np.abs(a - b), grid))


def compare_model(name: str, model: nn.Module, data: Batches, args: argparse.Namespace,
                  exact: bool) -> tuple[list[Row], dict[str, Any]]:
    loss_fn = nn.CrossEntropyLoss()
    rows: list[Row] = []
    info: dict[str, Any] = {}
    print(f"\n[{name}] {sum(p.numel() for p in model.parameters()):,} parameters, {data.n_samples} samples "
          f"in {len(data)} batches ({', '.join(str(len(x)) for x, _ in data)})", flush=True)

    # Reference eigenvalues: Lanczos to 1e-8 on a float64 copy (same weights, float64 arithmetic), every
    # batch's gradient graph cached (speed only).
    model64 = copy.deepcopy(model).double()
    data64 = as_batches([(x.double(), y) for x, y in data])
    trace_reference = None
    spectrum = None
    with CurvatureOperator(model64, loss_fn, data64, cache_graph=True) as op:
        (reference, ref_seconds) = timed(lambda: lanczos(op, 5, tol=1e-8, max_iter=1000, seed=123))
        if exact:
            matrix = op.matmat(torch.eye(op.size, dtype=torch.float64)).cpu().numpy()
            matrix = (matrix + matrix.T) / 2
            spectrum = np.linalg.eigvalsh(matrix)
            trace_reference = float(np.trace(matrix))
    del model64, data64
    top = reference.values
    print(f"  reference top-5 {np.array2string(top, precision=6)} (float64 Lanczos, tol 1e-8, "
          f"converged={reference.converged}, {reference.n_matvec} HVPs, {ref_seconds:.1f} s"
          f"{'; exact spectrum and trace from the dense Hessian' if exact else ''})", flush=True)
    info["top"] = top

    for k in (1, 5):
        ours, seconds = timed(lambda k=k: hessian.eigenvalues(model, loss_fn, data, k=k, tol=args.tol))
        ours_error = relative_error(ours.values, top[:k])
        rows.append(Row(name, f"top-{k}", "landscape", ours.n_hvp, seconds, ours_error, f"Lanczos tol={args.tol}"))
        # PyHessian with its default tolerance, then tightened until it is at least as accurate as ours
        for tol in PYHESSIAN_TOLS:
            (values, n_hvp), seconds = timed(lambda k=k, tol=tol: pyhessian_eigen(model, data, k, tol))
            error = relative_error(values, top[:k])
            matched = error <= ours_error
            if tol == PYHESSIAN_TOLS[0] or matched or tol == PYHESSIAN_TOLS[-1]:
                label = "default" if tol == PYHESSIAN_TOLS[0] else ("matched" if matched else "tightest tried")
                rows.append(Row(name, f"top-{k}", "pyhessian", n_hvp, seconds, error,
                                f"power iteration tol={tol:g} ({label})"))
            print(f"  top-{k}: pyhessian tol={tol:g}: {n_hvp} HVPs, error {error:.1e}", flush=True)
            if matched:
                break

    ours, seconds = timed(lambda: hessian.trace(model, loss_fn, data, method="hutch++", n_matvec=args.n_matvec))
    err = abs(ours.value - trace_reference) / abs(trace_reference) if trace_reference else None
    rows.append(Row(name, "trace", "landscape", ours.n_hvp, seconds, err,
                    f"Hutch++ {ours.value:.4g} ± {ours.stderr:.2g}"))
    (value, stderr, n_hvp), seconds = timed(lambda: pyhessian_trace(model, data))
    err = abs(value - trace_reference) / abs(trace_reference) if trace_reference else None
    rows.append(Row(name, "trace", "pyhessian", n_hvp, seconds, err, f"Hutchinson {value:.4g} ± {stderr:.2g}"))
    print("  trace done", flush=True)

    runs, steps = args.n_runs, args.n_steps
    ours, seconds_ours = timed(lambda: hessian.density(model, loss_fn, data, n_runs=runs, n_steps=steps))
    theirs, seconds_theirs = timed(
        lambda: hessian.density(model, loss_fn, data, n_runs=runs, n_steps=steps, backend="pyhessian"))
    low = min(ours.span()[0], theirs.span()[0])
    high = max(ours.span()[1], theirs.span()[1])
    sigma = (high - low) / 100
    grid = np.linspace(low - 5 * sigma, high + 5 * sigma, 400)
    curve_ours, curve_theirs = smoothed(ours, grid, sigma), smoothed(theirs, grid, sigma)
    for who, result, seconds, curve in (("landscape", ours, seconds_ours, curve_ours),
                                        ("pyhessian", theirs, seconds_theirs, curve_theirs)):
        lam_err = abs(result.nodes.max() - top[0]) / abs(top[0])
        note = f"λmax err {lam_err:.1e}"
        error = None
        if spectrum is not None:
            exact_curve = np.exp(-0.5 * ((grid[:, None] - spectrum[None]) / sigma) ** 2).sum(1) / (
                len(spectrum) * sigma * math.sqrt(2 * math.pi))
            error = l1(curve, exact_curve, grid)
            note += "; error = L1 to exact smoothed density"
        else:
            note += f"; L1(ours, theirs) {l1(curve_ours, curve_theirs, grid):.1e}"
        rows.append(Row(name, f"density {runs}x{steps}", who, result.n_hvp, seconds, error, note))
    print("  density done", flush=True)
    info["trace_reference"] = trace_reference
    return rows, info


def trace_study(model: nn.Module, data: Batches, budgets: list[int], seeds: int) -> tuple[float, list[tuple[int, str, float, float]]]:
    """Each estimator's RMS relative error over seeds against the exact trace, and its calibration.

    The MLP is small enough to form its Hessian (float64, n unit-vector products) once; the estimators then
    run on that matrix, which does exactly what they do on the operator (same products, same arithmetic)
    in a fraction of a second per estimate, on every core (nothing here is timed), so enough seeds fit for
    the error ratios to be settled to a few percent. Calibration = RMS error / mean reported stderr (1
    when the error bars are honest).
    """
    model64 = copy.deepcopy(model).double()
    with CurvatureOperator(model64, nn.CrossEntropyLoss(), as_batches([(x.double(), y) for x, y in data]),
                           cache_graph=True) as op:
        matrix = op.matmat(torch.eye(op.size, dtype=torch.float64))
    dense = DenseOperator((matrix + matrix.T) / 2)
    reference = float(torch.trace(dense.matrix))
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        for budget in budgets:
            for label, estimator in (("hutchinson", hutchinson), ("hutch++", hutch_plus_plus), ("xtrace", xtrace)):
                runs = [estimator(dense, budget, seed=s) for s in range(seeds)]
                errors = np.array([r.value - reference for r in runs])
                rms = float(np.sqrt(np.mean(np.square(errors))))
                out.append((budget, label, rms / abs(reference), rms / float(np.mean([r.stderr for r in runs]))))
    finally:
        torch.set_num_threads(threads)
    return reference, out


# --------------------------------------------------------------------------------------------------
# Headline: top-3 of a 25k-parameter CNN, 256 images in 2 batches, tol 1e-3 for both
# --------------------------------------------------------------------------------------------------


def flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def best_time(fn: Callable[[], Any], repeats: int, inner: int = 1) -> float:
    """The fastest of ``repeats`` timings of ``inner`` calls, per call (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def pyhessian_engine(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """PyHessian's ``hessian`` object in dataloader mode, its products counted in ``engine.count``."""
    from pyhessian import hessian as PyHessian

    engine = PyHessian(model, nn.CrossEntropyLoss(), dataloader=data, cuda=False)
    engine.count = 0
    product = engine.dataloader_hv_product

    def counted(v: Any) -> Any:
        engine.count += 1
        return product(v)

    engine.dataloader_hv_product = counted
    return engine


def pyhessian_top(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], k: int) -> tuple[np.ndarray, int]:
    """PyHessian's own ``eigenvalues`` with its defaults (maxIter=100, tol=1e-3), start vectors seeded."""
    torch.manual_seed(0)
    engine = pyhessian_engine(model, data)
    values, _ = engine.eigenvalues(top_n=k)
    for p in model.parameters():
        p.grad = None  # it leaves graph-attached gradients behind
    return np.sort(np.asarray(values, dtype=np.float64))[::-1], engine.count


def headline(repeats: int, k: int = 3, tol: float = 1e-3) -> None:
    x, y = digits(1024)  # the same model and data in the quick and the full run
    torch.manual_seed(4)
    model = train(make_small_cnn(), x, y, epochs=3)
    pairs = [(x[:128], y[:128]), (x[128:256], y[128:256])]
    data = as_batches(pairs)
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n[headline] {n_params:,}-parameter CNN, {data.n_samples} images in {len(data)} batches of 128; top-{k} "
          f"at tol {tol:g} for both; best of {repeats} interleaved repeats", flush=True)
    model64 = copy.deepcopy(model).double()
    with CurvatureOperator(model64, loss_fn, as_batches([(a.double(), b) for a, b in pairs])) as op:
        reference = lanczos(op, k, tol=1e-10, max_iter=500, seed=7).values
    del model64

    hessian.eigenvalues(model, loss_fn, data, k=k, tol=tol)  # warm-up of both (first-call allocations)
    pyhessian_top(model, pairs, k)
    ours_times, residual_times, theirs_times = [], [], []
    for _ in range(repeats):
        # the default: tol as PyHessian means it, the estimated relative error of the eigenvalues
        ours, seconds = timed(lambda: hessian.eigenvalues(model, loss_fn, data, k=k, tol=tol))
        ours_times.append(seconds)
        by_residual, seconds = timed(lambda: hessian.eigenvalues(model, loss_fn, data, k=k, tol=tol,
                                                                 criterion="residual"))
        residual_times.append(seconds)
        (theirs, n_theirs), seconds = timed(lambda: pyhessian_top(model, pairs, k))
        theirs_times.append(seconds)
    t_ours, t_residual, t_theirs = min(ours_times), min(residual_times), min(theirs_times)

    # One product's cost in gradients of the loss over the same data: FLOPs, then time.
    params = list(model.parameters())

    def gradient() -> None:
        for a, b in pairs:
            torch.autograd.grad(loss_fn(model(a), b), params)

    engine = pyhessian_engine(model, pairs)
    v = [torch.randn_like(p) for p in params]
    cost: dict[str, tuple[float, float]] = {}
    g_flops, g_time = flops(gradient), best_time(gradient, 15, 3)
    for label, cache in (("landscape (cached graphs)", None), ("landscape (cache_graph=False)", False)):
        with CurvatureOperator(model, loss_fn, data, cache_graph=cache) as op:
            vector = torch.randn(op.size)
            op.matvec(vector)  # builds (and by default keeps) the graphs
            cost[label] = (flops(lambda op=op, vector=vector: op.matvec(vector)) / g_flops,
                           best_time(lambda op=op, vector=vector: op.matvec(vector), 15, 3) / g_time)
            if cache is None:
                kept, estimate = op.cached_batches, op.cache_estimate
    cost["pyhessian"] = (flops(lambda: engine.dataloader_hv_product(v)) / g_flops,
                         best_time(lambda: engine.dataloader_hv_product(v), 15, 3) / g_time)
    for p in model.parameters():
        p.grad = None

    ours_err = float(np.max(np.abs(ours.values - reference) / np.abs(reference)))
    residual_err = float(np.max(np.abs(by_residual.values - reference) / np.abs(reference)))
    theirs_err = float(np.max(np.abs(theirs - reference) / np.abs(reference)))
    lam_diff = abs(ours.values[0] - theirs[0]) / abs(ours.values[0])
    print(f"  reference top-{k} {np.array2string(reference, precision=6)} (float64 Lanczos, tol 1e-10); "
          f"{kept} of {len(data)} graphs cached by default ({estimate / 2**20:.1f} MiB estimated)")
    print(f"\n{'who':<10} {'HVPs':>5} {'seconds':>8} {'grads/HVP (FLOPs, time)':>24} {'max rel.err top-3':>18}  λ₁")
    print(f"{'landscape':<10} {ours.n_hvp:>5} {t_ours:>8.3f} {cost['landscape (cached graphs)'][0]:>15.2f}, "
          f"{cost['landscape (cached graphs)'][1]:.2f}  {ours_err:>18.1e}  {ours.values[0]:.6g}")
    print(f"{'…residual':<10} {by_residual.n_hvp:>5} {t_residual:>8.3f} {'':>24}  {residual_err:>18.1e}  "
          f"{by_residual.values[0]:.6g}")
    print(f"{'pyhessian':<10} {n_theirs:>5} {t_theirs:>8.3f} {cost['pyhessian'][0]:>15.2f}, {cost['pyhessian'][1]:.2f}  "
          f"{theirs_err:>18.1e}  {theirs[0]:.6g}")
    rebuilt = cost["landscape (cache_graph=False)"]
    print(f"time ratio {t_theirs / t_ours:.2f}x (PyHessian / landscape), HVP ratio {n_theirs / ours.n_hvp:.2f}x, "
          f"λ₁ relative difference {lam_diff:.1e}; our product with graphs rebuilt: {rebuilt[0]:.2f} / "
          f"{rebuilt[1]:.2f} gradients (FLOPs / time)", flush=True)
    print(f"with criterion='residual' (tol bounds the relative Ritz residuals, as with return_vectors; eigenvalues "
          f"good to about tol²): time ratio {t_theirs / t_residual:.2f}x, HVP ratio {n_theirs / by_residual.n_hvp:.2f}x")
    print(f"  all timings (s): landscape {', '.join(f'{t:.3f}' for t in ours_times)}; "
          f"residual rule {', '.join(f'{t:.3f}' for t in residual_times)}; "
          f"pyhessian {', '.join(f'{t:.3f}' for t in theirs_times)}")


def print_table(rows: list[Row]) -> None:
    print(f"\n{'model':<6} {'task':<14} {'who':<10} {'HVPs':>6} {'seconds':>9} {'rel.err':>9}  "
          f"{'HVP ratio':>9} {'time ratio':>10}  note")
    by_key = {(r.model, r.task, r.who): r for r in rows}
    for r in rows:
        ratio_hvp = ratio_time = ""
        if r.who == "pyhessian":
            ours = by_key[(r.model, r.task, "landscape")]
            ratio_hvp = f"{r.n_hvp / max(ours.n_hvp, 1):.1f}x"
            ratio_time = f"{r.seconds / ours.seconds:.1f}x"
        err = "" if r.error is None else f"{r.error:.1e}"
        print(f"{r.model:<6} {r.task:<14} {r.who:<10} {r.n_hvp:>6} {r.seconds:>9.2f} {err:>9}  "
              f"{ratio_hvp:>9} {ratio_time:>10}  {r.note}")
    print("ratios are PyHessian / landscape (higher is better for landscape)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer seeds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 gives stable timings)")
    parser.add_argument("--tol", type=float, default=1e-3, help="our Lanczos tolerance")
    parser.add_argument("--only", choices=["target", "cnn", "mlp"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_samples = 1024 if args.quick else 3584
    batch = 256 if args.quick else 512
    args.n_matvec = 60
    args.n_runs, args.n_steps = (4, 30) if args.quick else (8, 40)
    trace_seeds = 100 if args.quick else 500
    x, y = digits(n_samples)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {'quick' if args.quick else 'full'} run; "
          f"batches of {batch} (last smaller)")
    rows: list[Row] = []
    started = time.perf_counter()
    if args.only in (None, "target"):
        headline(repeats=5 if args.quick else 7)
    if args.only == "cnn" or (args.only is None and not args.quick):  # the 137k CNN: full runs only
        torch.manual_seed(1)  # initial weights
        cnn = train(make_cnn(), x, y, epochs=2 if args.quick else 4)
        cnn_rows, _ = compare_model("cnn", cnn, unequal_batches(x, y, batch + 7), args, exact=False)
        rows += cnn_rows
    if args.only in (None, "mlp"):
        torch.manual_seed(2)
        mlp = train(make_mlp(), x, y, epochs=60)
        mlp_data = unequal_batches(x, y, batch + 7)
        mlp_rows, _ = compare_model("mlp", mlp, mlp_data, args, exact=True)
        rows += mlp_rows
    if rows:
        print_table(rows)
    if args.only in (None, "mlp"):
        torch.manual_seed(3)
        early = train(make_mlp(), x, y, epochs=3)
        studies = [("trained 60 epochs: decaying spectrum", mlp), ("trained 3 epochs: flatter spectrum", early)]
        for label, model in studies[: 1 if args.quick else 2]:  # the flatter spectrum in full runs only
            reference, study = trace_study(model, mlp_data, [30, 60, 120], trace_seeds)
            print(f"\nTrace estimators on the MLP {label} (exact trace {reference:.5g}); RMS relative error "
                  f"over {trace_seeds} seeds at equal Hessian-vector products (calibration: RMS error / mean stderr):")
            print(f"{'HVPs':>6} {'hutchinson':>11} {'hutch++':>9} {'xtrace':>9}  {'hutchinson/hutch++':>18}  "
                  f"{'hutchinson/xtrace':>17}  calibration h / h++ / x")
            for budget in sorted({b for b, _, _, _ in study}):
                errs = {name: e for b, name, e, _ in study if b == budget}
                cal = {name: c for b, name, _, c in study if b == budget}
                print(f"{budget:>6} {errs['hutchinson']:>11.2e} {errs['hutch++']:>9.2e} {errs['xtrace']:>9.2e}  "
                      f"{errs['hutchinson'] / errs['hutch++']:>17.2f}x  {errs['hutchinson'] / errs['xtrace']:>16.2f}x  "
                      f"{cal['hutchinson']:.2f} / {cal['hutch++']:.2f} / {cal['xtrace']:.2f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
