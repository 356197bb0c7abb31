"""Loss-landscape slices checked against direct evaluations at the same points, exact restoration,
vmap vs loop, resume after interruption, interpolation, the 3-model plane, trajectory PCA, the probe."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.checkpoints import Checkpoint
from landscape.data import as_batches
from landscape.directions import cosine
from landscape.evaluate import evaluate
from landscape.params import perturbed
from probes import slices
from probes.base import ProbeContext, Result

# Two evaluations of the same weights on the same batches run the same kernels, but a grid point is
# written as origin + a·d1 + b·d2 while `perturbed` adds in place from θ: both are the same float32
# operations in the same order, so values agree to rounding of the float64 loss sum (1e-12 relative).
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def image_data(n: int = 30, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    return [(x[:17], y[:17]), (x[17:], y[17:])]  # unequal batches: the sample-weighted mean must be exact


def vector_data(n: int = 24, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
    return [(x[:10], y[:10]), (x[10:], y[10:])]


def with_stats(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics (as after training)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model


def direct(model: nn.Module, loss_fn, data, dirs, coeffs) -> tuple[float, float | None]:
    """The loss at θ + Σ cₖ·dₖ evaluated the plain way (independent of the slicing engine)."""
    mode = model.training
    model.eval()
    with perturbed(model, dirs, coeffs):
        result = evaluate(model, loss_fn, as_batches(data))
    model.train(mode)
    return result.loss, result.accuracy


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


LOSS = nn.CrossEntropyLoss()


# ------------------------------------------------------------------------------------------- slice_2d
def test_slice_2d_equals_direct_evaluation_with_explicit_directions() -> None:
    model, data = with_stats(cnn()), image_data()
    dirs = slices.random_directions(model, 2, seed=4)
    surface = slices.slice_2d(model, LOSS, data, directions=dirs, span=(-0.5, 1.0, -1.0, 0.25), steps=(4, 3))
    assert surface.loss.shape == (3, 4) and surface.accuracy.shape == (3, 4)
    np.testing.assert_array_equal(surface.x, np.linspace(-0.5, 1.0, 4))
    np.testing.assert_array_equal(surface.y, np.linspace(-1.0, 0.25, 3))
    for j, yj in enumerate(surface.y):
        for i, xi in enumerate(surface.x):
            loss, acc = direct(model, LOSS, data, dirs, (xi, yj))
            np.testing.assert_allclose(surface.loss[j, i], loss, **EXACT)
            assert surface.accuracy[j, i] == acc


def test_slice_2d_centre_is_the_unperturbed_loss_and_test_data_is_evaluated() -> None:
    model, data, test = cnn(), image_data(), image_data(12, seed=5)
    surface = slices.slice_2d(model, LOSS, data, steps=5, span=1.0, test_data=test)
    assert surface.x[2] == 0.0 and surface.y[2] == 0.0
    model.eval()
    np.testing.assert_allclose(surface.loss[2, 2], evaluate(model, LOSS, as_batches(data)).loss, **EXACT)
    np.testing.assert_allclose(surface.test_loss[2, 2], evaluate(model, LOSS, as_batches(test)).loss, **EXACT)
    dirs = surface.directions
    loss, acc = direct(model, LOSS, test, dirs, (surface.x[4], surface.y[0]))
    np.testing.assert_allclose(surface.test_loss[0, 4], loss, **EXACT)
    assert surface.test_accuracy[0, 4] == acc


def test_regression_targets_give_no_accuracy() -> None:
    model = mlp()
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(9, 5, generator=g), torch.randn(9, 3, generator=g))
    surface = slices.slice_2d(model, nn.MSELoss(), data, steps=3)
    assert surface.accuracy is None and np.isfinite(surface.loss).all()


def test_model_left_exactly_as_found() -> None:
    model = with_stats(cnn())
    model.train()
    model[1].eval()  # a mixed mode must survive too
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = full_state(model)
    modes = [m.training for m in model.modules()]
    slices.slice_2d(model, LOSS, image_data(), steps=3)
    slices.slice_2d(model, LOSS, image_data(), steps=3, vectorize=True)
    slices.slice_1d(model, LOSS, image_data(), steps=3)
    after = full_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers bit for bit
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[2].weight.grad is None if hasattr(model[2], "weight") else True


def test_vmap_path_equals_loop_path() -> None:
    model, data = with_stats(cnn()), image_data()
    loop = slices.slice_2d(model, LOSS, data, steps=(4, 3), vectorize=False)
    vmapped = slices.slice_2d(model, LOSS, data, steps=(4, 3), vectorize=True, points_per_pass=3)
    # Different kernels (grouped convolution, batched matmul): float32 rounding, ~1e-7 relative.
    np.testing.assert_allclose(vmapped.loss, loop.loss, rtol=1e-5)
    np.testing.assert_array_equal(vmapped.accuracy, loop.accuracy)


def test_vectorize_true_reports_untraceable_models() -> None:
    class ItemModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * float(self.lin.weight.sum().item() > -1e9)  # .item() cannot run under vmap

    with pytest.raises(RuntimeError, match="vectorize=True failed"):
        slices.slice_2d(ItemModel(), LOSS, vector_data(), steps=2, vectorize=True)


# Factored input layers add f(x; d) terms instead of moving the layer's weights: the same value up to
# float32 rounding of a sum of a few terms (~1e-7 relative), hence 1e-6.
FACTORED = {"rtol": 1e-6, "atol": 1e-7}


def wide_input_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # first layer reads 48 inputs per output: factored by default
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))


def wide_data(n: int = 26, seed: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return [(x[:11], y[:11]), (x[11:], y[11:])]


def test_factored_input_layer_equals_moving_its_weights() -> None:
    model, data, test = wide_input_mlp(), wide_data(), wide_data(9, seed=4)
    dirs = slices.random_directions(model, 2, seed=1, ignore=None)  # biases move too (copies of the weights)
    factored = slices.slice_2d(model, LOSS, data, directions=dirs, steps=(4, 3), test_data=test)
    plain = slices.slice_2d(model, LOSS, data, directions=dirs, steps=(4, 3), test_data=test, factor_input=False)
    np.testing.assert_allclose(factored.loss, plain.loss, **FACTORED)
    np.testing.assert_allclose(factored.test_loss, plain.test_loss, **FACTORED)
    assert not np.array_equal(factored.loss, plain.loss)  # the shortcut really ran (other rounding)
    loss, _ = direct(model, LOSS, data, dirs, (factored.x[0], factored.y[2]))
    np.testing.assert_allclose(factored.loss[2, 0], loss, **FACTORED)
    assert "forward" not in model[1].__dict__


def test_factoring_forced_on_a_convolution_and_skipped_for_shared_layers() -> None:
    model, data = with_stats(cnn()), image_data()
    forced = slices.slice_2d(model, LOSS, data, steps=3, factor_input=True)
    plain = slices.slice_2d(model, LOSS, data, steps=3, factor_input=False)
    np.testing.assert_allclose(forced.loss, plain.loss, **FACTORED)

    class Shared(nn.Module):  # the first layer is applied twice: it must run for real both times
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 5)
            self.out = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.lin(torch.tanh(self.lin(x)))))

    torch.manual_seed(0)
    shared, vdata = Shared(), vector_data()
    dirs = slices.random_directions(shared, 2, seed=0)
    surface = slices.slice_2d(shared, LOSS, vdata, directions=dirs, steps=3, factor_input=True)
    loss, _ = direct(shared, LOSS, vdata, dirs, (surface.x[0], surface.y[1]))
    np.testing.assert_allclose(surface.loss[1, 0], loss, **EXACT)


def test_factored_layer_fed_another_input_runs_for_real_with_its_moved_weights() -> None:
    class Switching(nn.Module):  # reads the raw input while the shortcut is prepared, then a copy of it
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.first, self.head, self.calls = nn.Linear(40, 8), nn.Linear(8, 3), 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.head(torch.relu(self.first(x if self.calls <= 2 else x.clone())))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 40, generator=g), torch.randint(0, 3, (20,), generator=g)
    data = [(x[:12], y[:12]), (x[12:], y[12:])]
    model = Switching()
    dirs = slices.random_directions(model, 2, seed=3)
    surface = slices.slice_2d(model, LOSS, data, directions=dirs, steps=3)  # 2 batches: 2 preparing calls
    loss, _ = direct(model, LOSS, data, dirs, (surface.x[2], surface.y[0]))
    np.testing.assert_allclose(surface.loss[0, 2], loss, **EXACT)


def test_model_restored_after_an_error_mid_grid() -> None:
    model, data = wide_input_mlp(), wide_data()
    before = full_state(model)
    calls = []

    def failing_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("boom")
        return LOSS(outputs, targets)

    with pytest.raises(RuntimeError, match="boom"):
        slices.slice_2d(model, failing_loss, data, steps=3)
    assert "forward" not in model[1].__dict__
    assert all(torch.equal(before[k], v) for k, v in full_state(model).items())


def test_slice_1d_is_the_x_axis_of_slice_2d() -> None:
    model, data = mlp(), vector_data()
    line = slices.slice_1d(model, LOSS, data, steps=5, seed=3)
    surface = slices.slice_2d(model, LOSS, data, steps=5, seed=3)
    np.testing.assert_array_equal(line.x, surface.x)
    np.testing.assert_allclose(line.loss, surface.loss[2], **EXACT)
    loss, _ = direct(model, LOSS, data, [line.direction], (line.x[0],))
    np.testing.assert_allclose(line.loss[0], loss, **EXACT)


def test_slice_1d_with_explicit_direction() -> None:
    model, data = mlp(), vector_data()
    direction = {"2.weight": torch.ones(3, 6)}  # names left out mean zero
    line = slices.slice_1d(model, LOSS, data, direction=direction, span=(0.0, 2.0), steps=3)
    for i, xi in enumerate(line.x):
        np.testing.assert_allclose(line.loss[i], direct(model, LOSS, data, [direction], (xi,))[0], **EXACT)


# --------------------------------------------------------------------------------------------- resume
class Killed(Exception):
    pass


class MemoryRows:
    """In-memory PartialRows; ``fail_after`` saves raise (a simulated kill after the row is stored)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, np.ndarray]] = {}
        self.saves = 0
        self.fail_after: int | None = None

    def load(self) -> dict[int, dict[str, np.ndarray]]:
        return {k: {n: a.copy() for n, a in v.items()} for k, v in self.rows.items()}

    def save(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        self.rows[index] = {k: np.array(v) for k, v in arrays.items()}
        self.saves += 1
        if self.fail_after is not None and self.saves >= self.fail_after:
            raise Killed


def test_resume_after_interruption_equals_uninterrupted() -> None:
    model, data, test = with_stats(cnn()), image_data(), image_data(10, seed=3)
    kwargs = {"steps": (4, 5), "span": 0.8, "seed": 2, "test_data": test}
    reference = slices.slice_2d(model, LOSS, data, **kwargs)
    store = MemoryRows()
    store.fail_after = 2
    with pytest.raises(Killed):
        slices.slice_2d(model, LOSS, data, partial=store, **kwargs)
    assert sorted(store.rows) == [0, 1]
    store.fail_after, store.saves = None, 0
    resumed = slices.slice_2d(model, LOSS, data, partial=store, **kwargs)
    assert store.saves == 3  # only the 3 unfinished rows were computed
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(reference, key))


def test_rows_of_another_grid_are_recomputed() -> None:
    model, data = mlp(), vector_data()
    store = MemoryRows()
    slices.slice_2d(model, LOSS, data, steps=3, seed=0, partial=store)
    store.saves = 0
    with pytest.warns(RuntimeWarning, match="recomputed"):
        other = slices.slice_2d(model, LOSS, data, steps=3, seed=1, partial=store)
    assert store.saves == 3
    np.testing.assert_array_equal(other.loss, slices.slice_2d(model, LOSS, data, steps=3, seed=1).loss)


# ---------------------------------------------------------------------------------------- interpolate
def test_interpolation_end_points_are_the_two_models(tmp_path: Path) -> None:
    a, b, data = with_stats(cnn(0)), with_stats(cnn(1)), image_data()
    a.eval(), b.eval()
    loss_a = evaluate(a, LOSS, as_batches(data)).loss
    loss_b = evaluate(b, LOSS, as_batches(data)).loss
    line = slices.interpolate(a, b, LOSS, data, steps=5)
    np.testing.assert_array_equal(line.x, np.linspace(0, 1, 5))
    # lerp is exact at 0 and 1, BatchNorm statistics included: the same weights give the same loss.
    np.testing.assert_allclose(line.loss[[0, -1]], [loss_a, loss_b], **EXACT)
    torch.save({"state_dict": b.state_dict()}, tmp_path / "b.pt")
    from_file = slices.interpolate(a.state_dict(), tmp_path / "b.pt", LOSS, data, steps=5, model=cnn(3),
                                   extend=(0.5, 0.5))
    np.testing.assert_array_equal(from_file.x, [-0.5, 0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(from_file.loss[[1, 3]], [loss_a, loss_b], **EXACT)


def test_interpolation_midpoint_is_the_average_model() -> None:
    a, b, data = mlp(0), mlp(1), vector_data()
    line = slices.interpolate(a, b, LOSS, data, steps=3)
    mid = mlp(2)
    with torch.no_grad():
        for pm, pa, pb in zip(mid.parameters(), a.parameters(), b.parameters()):
            pm.copy_(torch.lerp(pa, pb, 0.5))
    np.testing.assert_allclose(line.loss[1], evaluate(mid, LOSS, as_batches(data)).loss, **EXACT)


def test_interpolation_bad_input() -> None:
    a, b, data = mlp(0), mlp(1), vector_data()
    with pytest.raises(ValueError, match="extend must be a pair"):
        slices.interpolate(a, b, LOSS, data, extend=(-0.1, 0.0))
    with pytest.raises(ValueError, match="pass model="):
        slices.interpolate(a.state_dict(), b.state_dict(), LOSS, data)
    with pytest.raises(ValueError, match="steps must be an integer of at least 2"):
        slices.interpolate(a, b, LOSS, data, steps=1)


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


# ------------------------------------------------------------------------------------------- bad input
def test_bad_slice_arguments_are_named() -> None:
    model, data = mlp(), vector_data()
    with pytest.raises(ValueError, match="steps must be an integer of at least 2"):
        slices.slice_1d(model, LOSS, data, steps=1)
    with pytest.raises(ValueError, match=r"steps\[1\]"):
        slices.slice_2d(model, LOSS, data, steps=(3, 1))
    with pytest.raises(ValueError, match="start < end"):
        slices.slice_2d(model, LOSS, data, span=(1.0, -1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="start < end"):
        slices.slice_1d(model, LOSS, data, span=(0.0, float("nan")))
    with pytest.raises(ValueError, match="span must be a positive number or a tuple"):
        slices.slice_2d(model, LOSS, data, span=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="span must be a positive number"):
        slices.slice_2d(model, LOSS, data, span=-1.0)
    with pytest.raises(ValueError, match="exactly 2 directions"):
        slices.slice_2d(model, LOSS, data, directions=slices.random_directions(model, 3))
    with pytest.raises(ValueError, match="not trainable parameters"):
        slices.slice_2d(model, LOSS, data, directions=[{"fc.weight": torch.ones(3)}, {"0.weight": torch.ones(6, 5)}])
    with pytest.raises(ValueError, match=r"has shape \(5, 6\), the parameter has \(6, 5\)"):
        slices.slice_1d(model, LOSS, data, direction={"0.weight": torch.ones(5, 6)})
    with pytest.raises(ValueError, match="vectorize must be"):
        slices.slice_2d(model, LOSS, data, vectorize="yes")
    with pytest.raises(ValueError, match="factor_input must be"):
        slices.slice_2d(model, LOSS, data, factor_input="always")
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        slices.slice_2d({"w": torch.ones(2)}, LOSS, data)


# ----------------------------------------------------------------------------------------------- probe
def make_run(tmp_path: Path, n: int = 3) -> tuple[list[Checkpoint], dict[Checkpoint, dict]]:
    checkpoints, states = [], {}
    for k in range(n):
        model = mlp(k)
        c = Checkpoint(step=10 * k, path=tmp_path / f"step_{10 * k}.pt")
        torch.save(model.state_dict(), c.path)
        checkpoints.append(c)
        states[c] = model.state_dict()
    return checkpoints, states


def context(tmp_path: Path, step_index: int, **overrides) -> ProbeContext:
    checkpoints, states = make_run(tmp_path)
    model = mlp(step_index)
    model.eval()
    return ProbeContext(model=model, loss_fn=LOSS, train=as_batches(vector_data()),
                        test=as_batches(vector_data(12, seed=7)), step=checkpoints[step_index].step,
                        checkpoints=checkpoints, load_state=lambda c: states[c], **overrides)


def test_probe_result_keys_and_values(tmp_path: Path) -> None:
    probe = slices.PROBE
    params = {**probe.defaults, "steps": 5, "trajectory_steps": 3}
    ctx = context(tmp_path, 2, partial=MemoryRows())
    result = probe.run(ctx, **params)
    assert isinstance(result, Result) and result.valid
    assert set(result.arrays) == {
        "x", "y", "loss", "accuracy", "test_loss", "test_accuracy", "line_x", "line_loss", "line_accuracy",
        "line_test_loss", "line_test_accuracy",
        "pca_x", "pca_y", "pca_loss", "pca_accuracy", "path_x", "path_y", "path_steps", "explained_variance",
        "interp_x", "interp_loss", "interp_accuracy", "interp_test_loss", "interp_test_accuracy", "interp_from_step",
    }
    assert set(result.scalars) == {"loss_center", "loss_min", "loss_max", "interp_barrier"}
    assert result.arrays["loss"].shape == (5, 5) and result.arrays["pca_loss"].shape == (3, 3)
    np.testing.assert_array_equal(result.arrays["line_loss"], result.arrays["loss"][2])
    np.testing.assert_array_equal(result.arrays["line_test_loss"], result.arrays["test_loss"][2])
    np.testing.assert_array_equal(result.arrays["path_steps"], [0, 10, 20])
    assert result.scalars["loss_center"] == result.arrays["loss"][2, 2]
    np.testing.assert_allclose(result.scalars["loss_center"], evaluate(ctx.model, LOSS, ctx.train).loss, **EXACT)
    assert result.arrays["path_x"][-1] == 0.0 and result.arrays["path_y"][-1] == 0.0
    # The interpolation runs from the first checkpoint (x = 0) to this one (x = 1), 0.25 beyond each end.
    x, line = result.arrays["interp_x"], result.arrays["interp_loss"]
    assert len(x) == 25 and x[0] == -0.25 and x[-1] == 1.25 and result.arrays["interp_from_step"][0] == 0
    assert (x == 0.0).sum() == 1 and (x == 1.0).sum() == 1
    np.testing.assert_allclose(line[x == 0.0], evaluate(mlp(0), LOSS, ctx.train).loss, **EXACT)
    np.testing.assert_allclose(line[x == 1.0], result.scalars["loss_center"], **EXACT)
    inside = (x >= 0) & (x <= 1)
    assert result.scalars["interp_barrier"] == pytest.approx(max(0.0, line[inside].max() - max(line[x == 0.0][0],
                                                                                              line[x == 1.0][0])))
    import json

    json.dumps(result.params)
    # Same seed at another checkpoint: same draws, normalized to that checkpoint's weights.
    earlier = probe.run(context(tmp_path, 1), **params)
    assert "pca_loss" not in earlier.arrays and earlier.valid and "interp_loss" in earlier.arrays
    first = probe.run(context(tmp_path, 0), **params)
    assert "interp_loss" not in first.arrays and "interp_barrier" not in first.scalars
    direct_surface = slices.slice_2d(mlp(1), LOSS, vector_data(), steps=5, seed=0)
    np.testing.assert_allclose(earlier.arrays["loss"], direct_surface.loss, **EXACT)


def test_probe_line_without_a_zero_row_and_invalid_on_nan(tmp_path: Path) -> None:
    probe = slices.PROBE
    params = {**probe.defaults, "steps": 4, "trajectory": False}
    ctx = context(tmp_path, 0)
    result = probe.run(ctx, **params)
    line = slices.slice_1d(ctx.model, LOSS, ctx.train, steps=4, test_data=ctx.test)
    np.testing.assert_allclose(result.arrays["line_loss"], line.loss, **EXACT)
    np.testing.assert_allclose(result.arrays["line_test_loss"], line.test_loss, **EXACT)
    np.testing.assert_allclose(result.scalars["loss_center"], evaluate(ctx.model, LOSS, ctx.train).loss, **EXACT)
    with torch.no_grad():
        ctx.model[0].weight[0, 0] = float("nan")
    bad = probe.run(ctx, **params)
    assert not bad.valid and "nan" in bad.message.lower()


def test_probe_rejects_unknown_direction_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directions must be 'random' or 'hessian'"):
        slices.PROBE.run(context(tmp_path, 0), **{**slices.PROBE.defaults, "directions": "pca"})


# ------------------------------------------------------------------------------------- Hessian axes
@pytest.mark.skipif(importlib.util.find_spec("probes.hessian") is None, reason="probes.hessian not available")
def test_hessian_directions_are_top_eigenvectors_of_the_exact_hessian() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (20,), generator=g))
    dirs = slices.hessian_directions(model, LOSS, data, n=2)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[offset : offset + s.numel()].reshape(s)
            offset += s.numel()
        return LOSS(torch.func.functional_call(model, params, (data[0],)), data[1])

    values, vectors = np.linalg.eigh(torch.func.hessian(loss_of)(flat0).numpy())
    for k, d in enumerate(dirs):
        v = torch.cat([d[n].reshape(-1) for n in names]).numpy()
        # Eigenvectors are defined up to sign; the solver's tolerance leaves ~1e-4 in the vector.
        assert abs(abs(v @ vectors[:, -1 - k]) - 1.0) < 1e-4


@pytest.mark.skipif(importlib.util.find_spec("probes.hessian") is None, reason="probes.hessian not available")
def test_probe_with_hessian_axes(tmp_path: Path) -> None:
    ctx = context(tmp_path, 0)
    params = {**slices.PROBE.defaults, "steps": 3, "directions": "hessian", "span": 0.5, "trajectory": False}
    result = slices.PROBE.run(ctx, **params)
    assert result.valid and result.arrays["loss"].shape == (3, 3)
    dirs = slices.hessian_directions(ctx.model, LOSS, ctx.train, 2)
    for d in dirs:  # unit eigenvectors: the span is a distance in parameter space
        assert math.isclose(math.sqrt(sum(float(t.double().pow(2).sum()) for t in d.values())), 1.0, rel_tol=1e-5)
    loss, _ = direct(ctx.model, LOSS, ctx.train, dirs, (0.5, -0.5))
    # The eigenvectors come from an iterative solver run twice with the same seed: identical vectors.
    np.testing.assert_allclose(result.arrays["loss"][0, 2], loss, rtol=1e-9)


def test_probe_through_the_runner_and_a_real_store(tmp_path: Path) -> None:
    from landscape.checkpoints import find_checkpoints
    from landscape.runner import run_probes
    from landscape.store import Store

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for k in range(3):
        torch.save({"state_dict": mlp(k).state_dict(), "step": 5 * k}, folder / f"step_{5 * k}.pt")
    store = Store(tmp_path / "run.sqlite")
    report = run_probes(model_factory=mlp, loss_fn=LOSS, train=vector_data(), checkpoints=find_checkpoints(folder),
                        probes={"slices": {"steps": 3, "trajectory_steps": 3}}, store=store, run="r",
                        device="cpu", progress=False)
    assert report.ok, report.errors
    last = store.arrays("r", 10, "slices")
    assert {"pca_loss", "path_x", "explained_variance"} <= set(last)
    assert "pca_loss" not in store.arrays("r", 5, "slices")
    np.testing.assert_allclose(last["loss"], slices.slice_2d(mlp(2), LOSS, vector_data(), steps=3).loss, **EXACT)


def test_resume_through_the_store_partial_rows(tmp_path: Path) -> None:
    from landscape.store import Store

    model, data = mlp(), vector_data()
    reference = slices.slice_2d(model, LOSS, data, steps=(3, 4))
    rows = Store(tmp_path / "partial.sqlite").partial("r", 0, "slices", "hash")
    calls = []

    def dying_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 2 * 3 * 2:  # 2 batches × 3 points × 2 rows, then the process "dies"
            raise Killed
        return LOSS(outputs, targets)

    with pytest.raises(Killed):
        slices.slice_2d(model, dying_loss, data, steps=(3, 4), partial=rows)
    assert sorted(rows.load()) == [0, 1]
    resumed = slices.slice_2d(model, LOSS, data, steps=(3, 4), partial=rows)
    np.testing.assert_array_equal(resumed.loss, reference.loss)
    np.testing.assert_array_equal(resumed.accuracy, reference.accuracy)


def test_rows_saved_without_test_data_are_recomputed_with_it() -> None:
    model, data, test = mlp(), vector_data(), vector_data(8, seed=9)
    store = MemoryRows()
    slices.slice_2d(model, LOSS, data, steps=3, partial=store)
    with pytest.warns(RuntimeWarning, match="recomputed"):
        surface = slices.slice_2d(model, LOSS, data, steps=3, partial=store, test_data=test)
    assert surface.test_loss.shape == (3, 3)


def test_probe_rejects_an_interpolation_grid_that_misses_the_checkpoints(tmp_path: Path) -> None:
    params = {**slices.PROBE.defaults, "steps": 3, "trajectory": False, "interpolation_steps": 21}
    with pytest.raises(ValueError, match="interpolation_steps=21 with interpolation_extend=0.25 puts no grid point"):
        slices.PROBE.run(context(tmp_path, 1), **params)
