"""The grid engine (:mod:`landscape.grid`) through the slices that run on it: exact restoration of the
model, vmap vs loop, the input-layer shortcut against moving the weights, and resume after an
interruption (in memory and through the run store) giving exactly the uninterrupted grid."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from probes import slices

CASES = Path(__file__).resolve().parents[1] / "probes" / "slices" / "slices_cases.py"


def _cases() -> ModuleType:
    """The shared slice test cases (tiny models, data, direct evaluation), kept beside the slices tests."""
    if "slices_cases" not in sys.modules:
        spec = importlib.util.spec_from_file_location("slices_cases", CASES)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["slices_cases"] = module
        spec.loader.exec_module(module)
    return sys.modules["slices_cases"]


_shared = _cases()
EXACT = _shared.EXACT
LOSS = _shared.LOSS
Killed = _shared.Killed
MemoryRows = _shared.MemoryRows
cnn = _shared.cnn
direct = _shared.direct
full_state = _shared.full_state
image_data = _shared.image_data
mlp = _shared.mlp
vector_data = _shared.vector_data
with_stats = _shared.with_stats


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
