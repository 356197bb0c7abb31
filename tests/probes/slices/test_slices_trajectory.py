"""The plane through three models and the PCA plane of a training path, checked against the models
themselves, a numpy SVD and direct evaluations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from slices_cases import EXACT, LOSS, direct, mlp, vector_data

from landscape.data import as_batches
from landscape.directions import cosine
from landscape.evaluate import evaluate
from probes import slices


# ----------------------------------------------------------------------------------------------- plane
def test_plane_through_three_models_contains_them() -> None:
    models, data = [mlp(0), mlp(1), mlp(2)], vector_data()
    surface = slices.plane(models, LOSS, data, steps=(5, 4), margin=0.1)
    e1, e2 = surface.directions
    assert abs(cosine(e1, e2)) < 1e-6
    for e in (e1, e2):
        assert math.isclose(math.sqrt(sum(float(t.double().pow(2).sum()) for t in e.values())), 1.0, rel_tol=1e-6)
    p = surface.points
    assert p.shape == (3, 2) and p[0].tolist() == [0.0, 0.0] and p[1, 1] == 0.0
    assert surface.x.min() < p[:, 0].min() and surface.x.max() > p[:, 0].max()
    assert surface.y.min() < p[:, 1].min() and surface.y.max() > p[:, 1].max()
    carrier = mlp(0)
    for k in (1, 2):
        reconstructed = {n: t.detach() + p[k, 0] * e1[n] + p[k, 1] * e2[n] for n, t in carrier.named_parameters()}
        for n, t in models[k].named_parameters():
            torch.testing.assert_close(reconstructed[n], t.detach(), rtol=0, atol=2e-6)  # float32 rounding
        loss_k = evaluate(models[k], LOSS, as_batches(data)).loss
        # Points of the plane near model k: the loss there matches model k's to float32 weight rounding.
        assert math.isclose(direct(carrier, LOSS, data, [e1, e2], tuple(p[k]))[0], loss_k, rel_tol=1e-5)
    loss, _ = direct(carrier, LOSS, data, [e1, e2], (surface.x[3], surface.y[1]))
    np.testing.assert_allclose(surface.loss[1, 3], loss, **EXACT)


def test_plane_bad_input() -> None:
    a, b, data = mlp(0), mlp(1), vector_data()
    with pytest.raises(ValueError, match="exactly 3"):
        slices.plane([a, b], LOSS, data)
    with pytest.raises(ValueError, match="same parameters"):
        slices.plane([a, a, b], LOSS, data)
    mid = mlp(2)
    with torch.no_grad():
        for pm, pa, pb in zip(mid.parameters(), a.parameters(), b.parameters()):
            pm.copy_(torch.lerp(pa, pb, 0.5))
    with pytest.raises(ValueError, match="on one line"):
        slices.plane([a, b, mid], LOSS, data)


# ------------------------------------------------------------------------------------------ trajectory
def test_trajectory_of_a_straight_line() -> None:
    start, data = mlp(0), vector_data()
    direction = {n: torch.randn_like(p) for n, p in start.named_parameters()}
    path = []
    for t in range(5):
        m = mlp(0)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.add_(direction[n], alpha=0.3 * t)
        path.append(m)
    traj = slices.trajectory(path)
    assert traj.explained_variance[0] > 1 - 1e-9 and traj.explained_variance[1] == 0.0
    norm = math.sqrt(sum(float(d.double().pow(2).sum()) for d in direction.values()))
    # θ_t − θ_4 = 0.3·(t − 4)·v: coordinates along the unit axis are 0.3·(t − 4)·‖v‖ up to sign (the first
    # checkpoint is put on the positive side).
    np.testing.assert_allclose(np.abs(traj.coords[:, 0]), 0.3 * np.abs(np.arange(5) - 4) * norm, rtol=1e-5)
    assert traj.coords[0, 0] > 0
    np.testing.assert_allclose(traj.coords[:, 1], 0.0, atol=1e-5)
    assert abs(cosine(traj.directions[0], traj.directions[1])) < 1e-6
    surface = slices.trajectory_plane(path[-1], LOSS, data, traj, steps=(4, 3))
    np.testing.assert_array_equal(surface.points, traj.coords)
    loss, _ = direct(path[-1], LOSS, data, traj.directions, (surface.x[2], surface.y[1]))
    np.testing.assert_allclose(surface.loss[1, 2], loss, rtol=1e-9)


def test_trajectory_pca_matches_numpy_svd() -> None:
    models = [mlp(s) for s in range(6)]
    traj = slices.trajectory([m.state_dict() for m in models], reference=2, n_components=3, model=mlp(9))
    names = [n for n, _ in models[0].named_parameters()]
    flat = np.stack([np.concatenate([m.state_dict()[n].double().numpy().ravel() for n in names]) for m in models])
    deltas = flat - flat[2]
    s = np.linalg.svd(deltas, compute_uv=False)  # independent ground truth
    np.testing.assert_allclose(traj.singular_values, s[:3], rtol=1e-9)
    np.testing.assert_allclose(traj.explained_variance, s[:3] ** 2 / (s ** 2).sum(), rtol=1e-9)
    # Coordinates are projections on the unit axes.
    axes = np.stack([np.concatenate([d[n].double().numpy().ravel() for n in names]) for d in traj.directions], 1)
    np.testing.assert_allclose(traj.coords, deltas @ axes, rtol=1e-5, atol=1e-6)
    assert traj.reference == 2 and np.allclose(traj.coords[2], 0.0)


def test_trajectory_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        slices.trajectory([mlp()])
    with pytest.raises(ValueError, match="reference must index"):
        slices.trajectory([mlp(0), mlp(1)], reference=5)
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        slices.trajectory([mlp(0), mlp(1)], n_components=0)
