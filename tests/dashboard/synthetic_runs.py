"""A synthetic store with every probe's stored keys, for dashboard tests, browser tests and benchmarks.

The values follow smooth, plausible training curves (decaying loss, progressive sharpening towards 2/η,
a late jump in test accuracy, collapsing class means) so the figures look like real ones; nothing here
is a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from landscape.store import Store
from probes.base import Result

ALL_PROBES = ("metrics", "monitor", "hessian", "slices", "sharpness", "collapse", "grokking", "noise", "connectivity",
              "weights")
WEIGHT_LAYERS = ("fc1", "fc2", "fc3", "head")


def _sc_fraction(t: float, r: int) -> float:
    start = 0.3 + 0.15 * r
    return float(np.clip((t - start) * 0.8, 0.0, 1.0)) if t > start else 0.0


def checkpoint_steps(n_steps: int, every: int) -> list[int]:
    return [i * every for i in range(n_steps)]


def _metrics(t: float, r: int) -> dict[str, float]:
    return {
        "train_loss": 2.3 * np.exp(-(5 - 1.5 * r) * t) + 0.01 * (1 + r),
        "test_loss": 2.3 * np.exp(-(3 - 0.8 * r) * t) + 0.2 + 0.05 * r,
        "train_accuracy": 1.0 - 0.9 * np.exp(-(6 - 2.5 * r) * t),
        "test_accuracy": 0.1 + 0.8 / (1 + np.exp(-14 * (t - 0.6 - 0.1 * r))),
        "param_norm": 20.0 + 5 * t,
        "grad_norm": 3.0 * np.exp(-3 * t) + 0.05,
    }


def _hessian(t: float, r: int, lr: float, k: int, grid_size: int) -> Result:
    edge = 2.0 / lr
    top = edge * (0.2 + 0.75 * (1 - np.exp(-5 * t))) * (1 - 0.05 * r)
    eig = top * np.array([1.0 / (1 + 0.6 * i) for i in range(k)])
    scalars = {f"lambda_{i + 1}": float(v) for i, v in enumerate(eig)}
    trace = float(eig.sum() * 3.0)
    scalars.update(lambda_max=float(eig[0]), trace=trace, trace_stderr=0.04 * trace, n_hvp=60.0,
                   lambda_min=float(-0.02 * top), eos_ratio=float(eig[0] * lr / 2))
    grid = np.linspace(-0.1 * top, 1.1 * top, grid_size)
    bulk = np.exp(-0.5 * (grid / (0.03 * top)) ** 2) / (0.03 * top * np.sqrt(2 * np.pi))
    outliers = sum(np.exp(-0.5 * ((grid - v) / (0.01 * top)) ** 2) for v in eig) / (0.01 * top * np.sqrt(2 * np.pi))
    curve = 0.95 * bulk + 0.05 * outliers / k + 1e-12
    nodes = np.tile(np.concatenate([eig, np.linspace(-0.02 * top, 0.02 * top, 10)]), (3, 1))
    arrays = {
        "eigenvalues": eig, "residuals": np.full(k, 1e-6), "density_nodes": nodes,
        "density_weights": np.full_like(nodes, 1.0 / nodes.shape[1]), "density_grid": grid, "density_curve": curve,
    }
    return Result(scalars=scalars, arrays=arrays, params={"k": k})


def _surface(t: float, r: int, x: np.ndarray, y: np.ndarray, base: float) -> np.ndarray:
    xx, yy = np.meshgrid(x, y)
    curvature = 1.0 + 6.0 * t + r
    return base + curvature * (xx ** 2 + 0.4 * yy ** 2) + 0.15 * np.sin(3 * xx) ** 2 * (1 - t) + 0.05 * xx * yy


def _slices(t: float, r: int, grid: int, last: bool, steps: Sequence[int]) -> Result:
    x = np.linspace(-1.0, 1.0, grid)
    y = np.linspace(-1.0, 1.0, grid)
    m = _metrics(t, r)
    loss = _surface(t, r, x, y, m["train_loss"])
    test_loss = loss + m["test_loss"] - m["train_loss"] + 0.2 * np.meshgrid(x, y)[0]
    accuracy = np.clip(m["train_accuracy"] - 0.25 * (loss - loss.min()), 0.0, 1.0)
    test_accuracy = np.clip(m["test_accuracy"] - 0.25 * (test_loss - test_loss.min()), 0.0, 1.0)
    line_x = np.linspace(-1.0, 1.0, 2 * grid + 1)
    line_loss = m["train_loss"] + (1.0 + 6.0 * t + r) * line_x ** 2
    arrays = {
        "x": x, "y": y, "loss": loss, "accuracy": accuracy, "test_loss": test_loss, "test_accuracy": test_accuracy,
        "line_x": line_x, "line_loss": line_loss,
        "line_accuracy": np.clip(m["train_accuracy"] - 0.3 * (line_loss - line_loss.min()), 0, 1),
    }
    scalars = {"loss_center": float(m["train_loss"]), "loss_min": float(loss.min()), "loss_max": float(loss.max())}
    if t > 0:  # the interpolation from the first checkpoint (x = 0) to this one (x = 1)
        ix = np.linspace(-0.25, 1.25, 25)
        start = _metrics(0.0, r)["train_loss"]
        interp_loss = start + (m["train_loss"] - start) * ix + 0.3 * (1 + r) * ix * (1 - ix)
        arrays.update(interp_x=ix, interp_loss=interp_loss, interp_test_loss=interp_loss + 0.1,
                      interp_accuracy=np.clip(0.1 + 0.8 * ix, 0, 1), interp_from_step=np.array([steps[0]]))
        scalars["interp_barrier"] = float(max(0.0, interp_loss[(ix >= 0) & (ix <= 1)].max()
                                              - max(interp_loss[5], interp_loss[21])))
    if last and len(steps) >= 3:
        n = len(steps)
        angle = np.linspace(0, 3 * np.pi, n)
        radius = np.linspace(3.0, 0.0, n)
        px, py = radius * np.cos(angle), 0.6 * radius * np.sin(angle)
        pca_x = np.linspace(-3.5, 3.5, grid)
        pca_y = np.linspace(-2.5, 2.5, grid)
        xx, yy = np.meshgrid(pca_x, pca_y)
        pca_loss = m["train_loss"] + 0.25 * (xx ** 2 + 1.5 * yy ** 2) + 0.1 * np.cos(2 * xx) ** 2
        arrays.update(pca_x=pca_x, pca_y=pca_y, pca_loss=pca_loss,
                      pca_accuracy=np.clip(1.0 - 0.12 * (pca_loss - pca_loss.min()), 0, 1),
                      path_x=px, path_y=py, path_steps=np.asarray(steps, dtype=np.int64),
                      explained_variance=np.array([0.71, 0.18]))
    return Result(scalars=scalars, arrays=arrays, params={"steps": grid})


def _collapse(t: float, r: int, n_classes: int) -> Result:
    decay = np.exp(-(4 - 1.5 * r) * t)
    scalars = {
        "nc1": 5.0 * decay + 0.01, "nc2_equinorm_means": 0.5 * decay + 0.01, "nc2_equinorm_weights": 0.4 * decay + 0.01,
        "nc2_equiangular_means": 0.3 * decay + 0.005, "nc2_equiangular_weights": 0.2 * decay + 0.005,
        "nc2_maxangle_means": 0.3 * decay, "nc2_maxangle_weights": 0.2 * decay, "nc2_etf_distance": 0.8 * decay + 0.02,
        "nc3_self_duality": 0.9 * decay + 0.03, "nc4_ncc_mismatch": 0.3 * decay + 0.002 * (1 + r),
        "cdnv": 2.0 * decay + 0.02, "n_classes": float(n_classes),
        "test_nc1": 6.0 * decay + 0.3, "test_nc4_ncc_mismatch": 0.35 * decay + 0.05,
    }
    etf = -1.0 / (n_classes - 1)
    rng = np.random.default_rng(r)
    noise = rng.normal(0, 0.3, (n_classes, n_classes))
    cos = np.full((n_classes, n_classes), etf) + decay * (noise + noise.T) / 2
    np.fill_diagonal(cos, 1.0)
    arrays = {"cosine_means": np.clip(cos, -1, 1), "cosine_weights": np.clip(cos * 0.95 + 0.05 * etf, -1, 1),
              "class_counts": np.full(n_classes, 100), "mean_norms": np.linspace(1, 1.2, n_classes),
              "weight_norms": np.linspace(0.9, 1.0, n_classes)}
    np.fill_diagonal(arrays["cosine_weights"], 1.0)
    return Result(scalars=scalars, arrays=arrays, params={"layer": "fc"})


def _grokking(t: float, r: int, last: bool) -> Result:
    m = _metrics(t, r)
    sc = _sc_fraction(t, r)
    scalars = {
        "sc_fraction": sc, "zero_loss_fraction": sc * 0.8, "near_sc_fraction": min(1.0, sc * 1.5),
        "logit_gap_mean": 2 + 20 * t, "nlm_cosine": float(0.2 + 0.75 * t * (1 - 0.3 * r)),
        "weight_norm": 30 - 8 * t + 4 * r, "logit_norm": (3 + 40 * t) * (1 + 0.4 * r), "max_logit_mean": 2 + 30 * t, "train_loss": m["train_loss"],
        "train_accuracy": m["train_accuracy"], "test_loss": m["test_loss"], "test_accuracy": m["test_accuracy"],
        "generalization_gap": m["test_loss"] - m["train_loss"], "feature_change": float(np.exp(-3 * t)),
    }
    if not last:
        scalars["update_cosine"] = float(0.5 + 0.4 * t)
    edges = np.linspace(0, 40, 21)
    arrays = {"nlm_cosine_per_tensor": np.array([0.3, 0.5, 0.7]) + 0.2 * t,
              "tensor_names": np.array(["fc1.weight", "fc1.bias", "fc2.weight"]),
              "logit_gap_hist": np.histogram(np.random.default_rng(r).gamma(2 + 10 * t, 1.0, 200), edges)[0],
              "logit_gap_edges": edges}
    return Result(scalars=scalars, arrays=arrays, params={})


def _sharpness(t: float, r: int, lr: float) -> Result:
    grow = (1 - np.exp(-5 * t)) * (1 + 0.4 * r)
    lam = (2.0 / lr) * (0.2 + 0.75 * grow) * (1 - 0.05 * r)
    scalars = {
        "worst_case": 0.01 + 0.3 * grow, "worst_case_adaptive": 0.02 + 0.25 * grow, "sam_one_step": 0.008 + 0.2 * grow,
        "average_case": 1e-4 + 0.02 * grow, "gradient_norm": 3.0 * np.exp(-3 * t) + 0.05,
        "first_order_flatness": 0.05 + 2 * grow, "m_sharpness": 0.02 + 0.4 * grow,
        "lambda_max": lam, "trace": lam * 4, "eos_ratio": lam * lr / 2, "sgd_trace_ratio": 0.1 + 0.5 * grow,
    }
    if r % 2 == 1:  # an adaptive run: its preconditioned sharpness climbs to Adam's threshold 38/η and stays
        threshold = 38.0 / lr
        pre = threshold * (1 - 0.9 * np.exp(-6 * t)) * (1 + 0.02 * np.sin(20 * t))
        scalars.update(lambda_max_preconditioned=pre, preconditioned_threshold=threshold,
                       preconditioned_eos_ratio=pre / threshold)
    return Result(scalars=scalars, params={"rho": 0.05})


def _noise(t: float, r: int) -> Result:
    b_simple = 20.0 * np.exp(4 * t) * (1 + 0.5 * r)
    return Result(scalars={"trace_cov": 5.0 + t, "grad_norm_sq": (5.0 + t) / b_simple, "b_simple": b_simple,
                           "b_noise": 0.4 * b_simple, "n_samples": 1000.0},
                  arrays={"layer_names": np.array(["fc1", "fc2"]), "layer_snr": np.array([0.02, 0.05]) / (1 + t)},
                  params={"b_noise": True})


def _connectivity(r: int) -> Result:
    t = np.linspace(0.0, 1.0, 21)
    ends = (0.05 + 0.01 * r) * (1 - t) + 0.06 * t
    line = ends + 1.5 * 4 * t * (1 - t)
    curve = ends + 0.1 * 4 * t * (1 - t)
    aligned = ends + 0.5 * 4 * t * (1 - t)
    return Result(scalars={"line_barrier": float(np.max(line - ends)), "curve_barrier": float(np.max(curve - ends)),
                           "aligned_line_barrier": float(np.max(aligned - ends))},
                  arrays={"t": t, "line_loss": line, "curve_loss": curve, "aligned_line_loss": aligned,
                          "train_loss": np.linspace(0.8, 0.1, 50)}, params={"curve": "bezier"})


def _weights(t: float, r: int, bins: int = 30) -> Result:
    """Per-layer spectra whose tails grow heavier with training (alpha from ~6 down to ~2.5–3.5); the head
    has too few eigenvalues for a fit, as a 10-class output layer would."""
    rng = np.random.default_rng(100 + r)
    names, rows = list(WEIGHT_LAYERS), []
    for i, name in enumerate(names):
        n_evals = 10 if name == "head" else 128
        ratio, scale = 0.5, 0.01 * (1 + i)
        bulk = scale * (1 + np.sqrt(ratio)) ** 2 * rng.beta(1.2, 2.0, n_evals)
        alpha = 6.0 - (3.0 - 0.4 * i + 0.3 * r) * t
        n_tail = int(8 + 40 * t)
        xmin = scale * (1 + np.sqrt(ratio)) ** 2 * 0.8
        tail = xmin * (1 - rng.uniform(size=n_tail)) ** (-1 / (alpha - 1))
        evals = np.sort(np.concatenate([bulk[: n_evals - n_tail], tail]))
        log_edges = np.linspace(np.log10(evals.min()), np.log10(evals.max()), bins + 1)
        counts = np.histogram(np.log10(evals), bins=log_edges)[0]
        fitted = name != "head"
        top = float(evals.max())
        threshold = scale * ((1 + np.sqrt(ratio)) ** 2 + 0.1)
        rows.append(dict(name=name, alpha=alpha if fitted else np.nan, xmin=xmin if fitted else np.nan,
                         n_tail=n_tail if fitted else 0, n_evals=n_evals, log_edges=log_edges, counts=counts,
                         spectral_norm=top, mp_scale=scale, mp_ratio=ratio, mp_threshold=threshold,
                         n_spikes=int((evals > threshold).sum()), valid=fitted,
                         message="" if fitted else "too few eigenvalues for a power-law fit (10 positive < min_tail=10)"))
    scalars: dict[str, float] = {}
    for row in rows:
        if row["valid"]:
            scalars[f"{row['name']}/alpha"] = float(row["alpha"])
            scalars[f"{row['name']}/alpha_hat"] = float(row["alpha"] * np.log10(row["spectral_norm"]))
        scalars[f"{row['name']}/spectral_norm"] = row["spectral_norm"]
        scalars[f"{row['name']}/n_spikes"] = float(row["n_spikes"])
    fitted_rows = [row for row in rows if row["valid"]]
    scalars["alpha_mean"] = float(np.mean([row["alpha"] for row in fitted_rows]))
    scalars["alpha_weighted"] = float(np.mean([row["alpha"] * np.log10(row["spectral_norm"]) for row in fitted_rows]))
    scalars.update(n_layers=float(len(rows)), n_fitted=float(len(fitted_rows)), n_invalid=1.0)
    column = lambda key, dtype=float: np.array([row[key] for row in rows], dtype=dtype)  # noqa: E731
    arrays = {
        "layer_names": np.array(names), "layers": np.array(names), "messages": np.array([row["message"] for row in rows]),
        "valid": column("valid", bool), "alpha": column("alpha"), "xmin": column("xmin"), "n_tail": column("n_tail"),
        "n_evals": column("n_evals"), "spectral_norm": column("spectral_norm"), "mp_scale": column("mp_scale"),
        "mp_ratio": column("mp_ratio"), "mp_threshold": column("mp_threshold"), "n_spikes": column("n_spikes"),
        "esd_log10_edges": np.stack([row["log_edges"] for row in rows]),
        "esd_counts": np.stack([row["counts"] for row in rows]).astype(np.int64),
    }
    return Result(scalars=scalars, arrays=arrays, params={"esd_scale": "N"})


def write_run(store: Store, run: str, *, r: int = 0, n_steps: int = 12, every: int = 100, grid: int = 21,
              n_classes: int = 5, k: int = 5, lr: float = 0.05, probes: Sequence[str] = ALL_PROBES,
              monitor_every: int | None = None, error: bool = False) -> list[int]:
    """Write one synthetic run with ``n_steps`` checkpoints; returns its checkpoint steps."""
    store.add_run(run, {"lr": lr, "label": f"synthetic {run}"})
    steps = checkpoint_steps(n_steps, every)
    last_step = steps[-1]
    if "monitor" in probes:
        stride = monitor_every or max(1, every // 4)
        for s in range(0, last_step + 1, stride):
            t = s / max(last_step, 1)
            m = _metrics(t, r)
            store.write_result(run, s, "monitor", Result(scalars={
                "train_loss": m["train_loss"], "lr": lr, "grad_norm": m["grad_norm"], "weight_norm": 30 - 8 * t + 4 * r,
                "logit_norm": (3 + 40 * t) * (1 + 0.4 * r), "sc_fraction": _sc_fraction(t, r),
                "train_accuracy": m["train_accuracy"],
            }))
    for i, s in enumerate(steps):
        t = i / max(n_steps - 1, 1)
        last = i == n_steps - 1
        store.add_checkpoint(run, s, f"checkpoints/{run}/step_{s:06d}.pt")
        if "metrics" in probes:
            store.write_result(run, s, "metrics", Result(scalars=_metrics(t, r), params={"gradient": True}))
        if "hessian" in probes:
            store.write_result(run, s, "hessian", _hessian(t, r, lr, k, 200))
        if "slices" in probes:
            store.write_result(run, s, "slices", _slices(t, r, grid, last, steps))
        if "sharpness" in probes:
            store.write_result(run, s, "sharpness", _sharpness(t, r, lr))
        if "collapse" in probes:
            store.write_result(run, s, "collapse", _collapse(t, r, n_classes))
        if "grokking" in probes:
            store.write_result(run, s, "grokking", _grokking(t, r, last))
        if "noise" in probes:
            store.write_result(run, s, "noise", _noise(t, r))
        if "connectivity" in probes and last:
            store.write_result(run, s, "connectivity", _connectivity(r))
        if "weights" in probes:
            store.write_result(run, s, "weights", _weights(t, r))
    if error:
        store.write_error(run, steps[-1], "hessian", "Lanczos did not converge (synthetic error)")
    return steps


def write_synthetic_store(path: Path | str, *, runs: Sequence[str] = ("sgd", "adam"), n_steps: int = 12,
                          every: int = 100, grid: int = 21, probes: Sequence[str] = ALL_PROBES,
                          monitor_every: int | None = None) -> Path:
    """Create a store at ``path`` with the given runs (the first one also records one error)."""
    path = Path(path)
    with Store(path) as store:
        for r, run in enumerate(runs):
            write_run(store, run, r=r, n_steps=n_steps, every=every, grid=grid, probes=probes,
                      lr=0.05 if r % 2 == 0 else 0.02, monitor_every=monitor_every, error=r == 0)
    return path
