"""Training dynamics beyond SGD on scikit-learn's digits: Adam at its adaptive edge of stability, the gradient
noise scale over training, and mode connectivity between two independently trained networks.

1. An MLP (64 → 64 → 64 → 10, tanh, squared loss on one-hot targets) trained full batch with Adam, watched by
   the :class:`landscape.callbacks.Monitor`. The ``sharpness`` probe gets the optimizer, so it stores the
   preconditioned sharpness λmax(P⁻¹H) (P = √v̂ + ε, Adam's preconditioner) with its stability threshold
   (2 + 2β₁)/((1 − β₁)η) = 38/η, next to the raw λmax(H) (Cohen et al. 2022). The ``noise`` probe stores
   B_simple = tr Σ/|G|² and B_noise = tr(HΣ)/GᵀHG (McCandlish et al. 2018).
2. Two MLPs (64 → 64 → 64 → 10, ReLU) trained with minibatch SGD from different seeds: the loss barrier on the
   straight line between them, on a trained quadratic Bézier curve (Garipov et al. 2018), and on the straight
   line after permuting the second network's hidden units to match the first (Git Re-Basin weight matching).

What to expect with the defaults (about a minute on 2 CPU cores): λmax(P⁻¹H) climbs to ~38/η = 38,000 within a
few hundred steps and then hovers at 0.9–1.05 of it, while λmax(H) levels off near 8 — far below GD's 2/η =
2,000. Once there, the full-batch gradient oscillates along the unstable direction: |G|² swings by orders of
magnitude from one measurement to the next while tr Σ changes little, so the noise scales B_simple and B_noise
swing with it (they are small right after a swing up of |G|²). The straight line between the two SGD solutions
rises ~0.6 above their losses; the Bézier curve and the line after alignment stay within a few hundredths.

    python examples/adaptive_dynamics.py [--steps 1500] [--quick] [--out runs/dynamics]
    landscape dashboard runs/dynamics/dynamics.sqlite     # Hessian and Dynamics tabs
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from landscape.callbacks import Monitor
from landscape.demo import make_data
from landscape.store import Store
from probes.connectivity import align, bezier_curve, linear_path


class OneHotMSE(nn.Module):
    """Squared error against one-hot targets, averaged over samples and classes (a mean over the batch).

    The one-hot rows are picked from an identity matrix, which ``torch.func.vmap`` batches (per-sample
    gradients of the noise probe); ``nn.functional.one_hot`` reads its input's values and would not be.
    """

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(outputs.shape[-1], dtype=outputs.dtype, device=outputs.device)
        return nn.functional.mse_loss(outputs, eye[targets])


def mlp(activation: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), activation(), nn.Linear(64, 64), activation(), nn.Linear(64, 10))


def adam_run(store: Store, steps: int, lr: float, every: int) -> None:
    """Full-batch Adam; the Monitor runs the sharpness (with λmax(P⁻¹H)) and noise probes every ``every`` steps."""
    x, y = make_data()["train"]
    model = mlp(nn.Tanh, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = OneHotMSE()
    probes = {"sharpness": {"steps": 1, "n_samples": 1, "adaptive": False},
              "noise": {"hessian_samples": 64}}
    with Monitor(store, "adam", probes=probes, every=every, probe_every=every, data=(x, y), loss_fn=loss_fn,
                 label=f"full-batch Adam, lr {lr}") as monitor:
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            monitor.step(model, step, optimizer=optimizer, loss=loss)


def sgd_solution(seed: int, epochs: int, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """An MLP trained with minibatch SGD (momentum 0.9, batch 64) from its own seed, in eval mode."""
    model = mlp(nn.ReLU, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            index = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()


def connectivity_run(store: Store, epochs: int, curve_steps: int, n_points: int) -> dict[str, float]:
    data = make_data()
    x, y = data["train"]
    a, b = sgd_solution(1, epochs, x, y), sgd_solution(2, epochs, x, y)
    loss_fn = nn.CrossEntropyLoss()
    realigned = align(a, b, loss_fn, (x, y), n_points=n_points)
    curve = bezier_curve(a, b, loss_fn, (x, y), steps=curve_steps, lr=0.05, batch_size=128, n_points=n_points)
    test = linear_path(a, b, loss_fn, (x, y), n_points=n_points, eval_data=data["test"])
    store.add_run("connectivity", {"label": "two SGD solutions: line, Bézier curve, aligned line"})
    store.write_result("connectivity", 0, "connectivity", curve.to_result(aligned=realigned.after))
    return {"line": curve.line_barrier, "curve": curve.curve_barrier, "aligned": realigned.after.barrier,
            "loss_a": float(curve.line_loss[0]), "loss_b": float(curve.line_loss[-1]),
            "test_line": test.barrier, "sweeps": float(realigned.alignment.n_sweeps)}


def report(store: Store, lr: float) -> None:
    frame = store.scalars(run="adam")
    table = frame.pivot_table(index="step", columns="key", values="value", aggfunc="last")
    print(f"\nfull-batch Adam, η = {lr}: threshold 38/η = {38 / lr:,.0f}; GD's 2/η = {2 / lr:,.0f}")
    print(f"{'step':>6} {'train loss':>11} {'λmax(P⁻¹H)':>12} {'/ threshold':>12} {'λmax(H)':>9} "
          f"{'|G|²':>9} {'tr Σ':>9} {'B_simple':>9} {'B_noise':>9}")
    for step, row in table.iterrows():
        if not math.isfinite(row.get("lambda_max_preconditioned", math.nan)):
            continue
        print(f"{int(step):>6} {row.get('train_loss', math.nan):>11.5f} {row['lambda_max_preconditioned']:>12,.0f} "
              f"{row['preconditioned_eos_ratio']:>12.3f} {row.get('lambda_max', math.nan):>9.2f} "
              f"{row.get('grad_norm_sq', math.nan):>9.2e} {row.get('trace_cov', math.nan):>9.2e} "
              f"{row.get('b_simple', math.nan):>9.3g} {row.get('b_noise', math.nan):>9.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="full-batch Adam steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=30, help="SGD epochs for each of the two solutions")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small models run fastest on one)")
    parser.add_argument("--out", type=Path, default=Path("runs/dynamics"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, every, epochs, curve_steps, points = args.steps, 100, args.epochs, 600, 21
    if args.quick:
        steps, every, epochs, curve_steps, points = 60, 20, 2, 20, 5
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "dynamics.sqlite"
    path.unlink(missing_ok=True)
    started = time.time()
    with Store(path) as store:
        adam_run(store, steps, args.lr, every)
        report(store, args.lr)
        found = connectivity_run(store, epochs, curve_steps, points)
        errors = store.errors()
    print(f"\ntwo SGD solutions (train loss {found['loss_a']:.4f} and {found['loss_b']:.4f}); loss barrier "
          "= max over t of the rise above the chord between the two end losses:")
    print(f"  straight line          {found['line']:.4f}   (test loss: {found['test_line']:.4f})")
    print(f"  trained Bézier curve   {found['curve']:.4f}")
    print(f"  line after alignment   {found['aligned']:.4f}   ({int(found['sweeps'])} weight-matching sweep(s))")
    print(f"\ndone in {time.time() - started:.0f} s with {len(errors)} probe error(s); store: {path}")
    print(f"view it with: landscape dashboard {path}")


if __name__ == "__main__":
    main()
