"""1-D and 2-D slices and interpolation checked against direct evaluations at the same points, with
the arguments that are refused; the Hessian axes against the exact Hessian."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from slices_cases import EXACT, LOSS, cnn, direct, image_data, mlp, vector_data, with_stats
from torch import nn

from landscape.data import as_batches
from landscape.evaluate import evaluate
from probes import slices


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
