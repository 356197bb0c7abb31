"""Mode connectivity and weight matching: exact endpoints, exact SGD steps on the control point, barrier
definitions on hand-computed values, and recovery of a known permutation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.data import as_batches
from landscape.evaluate import evaluate
from probes import connectivity
from probes.connectivity import barrier, bezier_curve, curve_point, linear_path, permute, weight_matching
from probes.rebasin import permutation_spec


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run many times faster on one thread than on threads that contend for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed: int = 0, hidden: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 3)).double()


def bn_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
                         nn.Linear(5, 3)).double()


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.GELU(),
                         nn.Linear(7, 3)).double()


def data(n: int = 40, features: int = 4):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(n, features, generator=generator, dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def images(n: int = 12):
    generator = torch.Generator().manual_seed(6)
    return torch.randn(n, 1, 8, 8, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def fit(model: nn.Module, x, y, steps: int = 300) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def randomly_permuted(model: nn.Module, seed: int = 0):
    spec = permutation_spec(model)
    rng = np.random.default_rng(seed)
    perms = {g: rng.permutation(n) for g, n in spec.sizes.items()}
    return permute(model, perms), perms


# ---------------------------------------------------------------------------------------------------- curves


def test_curve_points_are_exact_at_the_ends_and_the_bend():
    generator = torch.Generator().manual_seed(0)
    a, c, b = (torch.randn(7, generator=generator, dtype=torch.float64) for _ in range(3))
    for curve in ("bezier", "polychain"):
        assert torch.equal(curve_point(a, c, b, 0.0, curve), a)
        assert torch.equal(curve_point(a, c, b, 1.0, curve), b)
    assert torch.equal(curve_point(a, c, b, 0.5, "polychain"), c)
    assert torch.allclose(curve_point(a, c, b, 0.5), (a + 2 * c + b) / 4, rtol=0, atol=1e-15)
    assert torch.allclose(curve_point(a, c, b, 0.25, "polychain"), (a + c) / 2, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=r"curve must be one of \('bezier', 'polychain'\)"):
        curve_point(a, c, b, 0.5, "spline")


def test_barrier_is_the_rise_above_the_interpolated_endpoint_losses():
    assert barrier(np.array([0.0, 0.5, 1.0]), np.array([1.0, 3.0, 2.0])) == 1.5
    assert barrier(np.array([0.0, 0.25, 1.0]), np.array([2.0, 1.0, 0.0])) == 0.0  # below the chord: the ends give 0
    with pytest.raises(ValueError, match=r"from exactly 0 to exactly 1"):
        barrier(np.array([0.1, 1.0]), np.array([1.0, 1.0]))


def test_curve_passes_through_both_endpoints_and_one_sgd_step_is_exact():
    x, y = data()
    a, b = fit(mlp(0), x, y), fit(mlp(1), x, y)
    loss_fn = nn.CrossEntropyLoss()
    result = bezier_curve(a, b, loss_fn, (x, y), steps=1, lr=0.1, momentum=0.0, batch_size=None, n_points=5)
    batches = as_batches((x, y))
    for index, model in ((0, a), (-1, b)):
        own = evaluate(model, loss_fn, batches)
        assert result.curve_loss[index] == own.loss == result.line_loss[index]
        assert result.curve_accuracy[index] == own.accuracy
    # the control point moved by one SGD step on L(θ(t)) at the drawn t: −lr · 2t(1−t) ∇L(θ(t))
    t = float(result.train_t[0])
    params_a, params_b = dict(a.named_parameters()), dict(b.named_parameters())
    middle = {n: (params_a[n].detach() + params_b[n].detach()) / 2 for n in params_a}
    point = {n: ((1 - t) ** 2 * params_a[n] + 2 * t * (1 - t) * middle[n] + t**2 * params_b[n]).detach()
             .requires_grad_(True) for n in params_a}
    loss = loss_fn(torch.func.functional_call(a, point, (x,)), y)
    grads = dict(zip(point, torch.autograd.grad(loss, list(point.values()))))
    assert result.train_loss[0] == pytest.approx(float(loss.detach()), rel=1e-12)
    for n in middle:
        expected = middle[n] - 0.1 * 2 * t * (1 - t) * grads[n]
        assert torch.allclose(result.control[n], expected, rtol=1e-12, atol=1e-14), n


def test_identical_endpoints_have_no_barrier():
    x, y = data()
    a = fit(mlp(0), x, y)
    line = linear_path(a, a, nn.CrossEntropyLoss(), (x, y), n_points=7)
    assert line.barrier == 0.0 and np.all(line.loss == line.loss[0])
    for curve in ("bezier", "polychain"):
        result = bezier_curve(a, a, nn.CrossEntropyLoss(), (x, y), curve=curve, steps=0, n_points=7)
        assert result.line_barrier == 0.0
        assert abs(result.curve_barrier) <= 1e-12


def test_trained_curve_is_lower_than_the_line_between_two_solutions():
    x, y = data(80)
    a, b = fit(mlp(0, hidden=8), x, y, 400), fit(mlp(3, hidden=8), x, y, 400)
    result = bezier_curve(a, b, nn.CrossEntropyLoss(), (x, y), steps=300, lr=0.05, batch_size=40, n_points=11)
    assert result.line_barrier > 0.05  # the two solutions are separated on the straight line
    assert result.curve_barrier < 0.5 * result.line_barrier
    record = result.to_result()
    assert record.scalars["curve_barrier"] == result.curve_barrier
    assert set(record.arrays) >= {"t", "curve_loss", "line_loss", "train_loss", "curve_accuracy", "line_accuracy"}


def test_batchnorm_statistics_are_recomputed_at_each_point():
    x, y = data()
    a, b = fit(bn_mlp(0), x, y, 50), fit(bn_mlp(1), x, y, 50)
    with torch.no_grad():  # running statistics far from the data's, so a stale one would show
        a[1].running_mean.fill_(5.0)
    result = bezier_curve(a, b, nn.CrossEntropyLoss(), (x, y), steps=20, batch_size=20, n_points=5)
    assert np.isfinite(result.curve_loss).all() and result.curve_loss[0] == result.line_loss[0]
    # t = 0 is model A with each BatchNorm's statistics set to the mean and unbiased variance of its inputs over
    # the (single) training batch, the inputs computed as in training (each layer normalized by its batch)
    reference = fit(bn_mlp(0), x, y, 50).eval()
    with torch.no_grad():
        hidden = x
        for layer in reference:
            if isinstance(layer, nn.BatchNorm1d):
                layer.running_mean.copy_(hidden.mean(dim=0))
                layer.running_var.copy_(hidden.var(dim=0, unbiased=True))
                centered = hidden - hidden.mean(dim=0)
                hidden = centered / (hidden.var(dim=0, unbiased=False) + layer.eps).sqrt() * layer.weight + layer.bias
            else:
                hidden = layer(hidden)
        expected = float(nn.functional.cross_entropy(reference(x), y))
    assert result.line_loss[0] == pytest.approx(expected, rel=1e-12)
    assert float(a[1].running_mean[0]) == 5.0  # the endpoints are not touched


def test_endpoints_of_different_architectures_name_the_mismatched_keys():
    x, y = data()
    other = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU(),
                          nn.Linear(3, 3)).double()
    with pytest.raises(ValueError, match=r"only in model_b: 6\.weight, 6\.bias; shape mismatches: 0\.weight "
                                         r"\(\(6, 4\) vs \(7, 4\)\)"):
        bezier_curve(mlp(0), other, nn.CrossEntropyLoss(), (x, y), steps=0)
    with pytest.raises(ValueError, match=r"different architectures"):
        weight_matching(mlp(0), other)


# ------------------------------------------------------------------------------------------ weight matching


@pytest.mark.parametrize("make, inputs", [(mlp, data), (bn_mlp, data), (cnn, images)])
def test_weight_matching_recovers_a_known_permutation(make, inputs):
    x, y = inputs()
    model = make(0)
    if make is not mlp:
        fit(model, x, y, 5)  # non-trivial running statistics
    shuffled, applied = randomly_permuted(model, seed=1)
    model.eval()
    shuffled.eval()
    with torch.no_grad():
        assert torch.allclose(shuffled(x), model(x), rtol=1e-12, atol=1e-12)  # a permutation keeps the function
    found = weight_matching(model, shuffled, data=(x, y))
    for group, perm in applied.items():
        np.testing.assert_array_equal(found.permutations[group], np.argsort(perm))
    for key, value in model.state_dict().items():
        assert torch.equal(found.model.state_dict()[key], value), key
    line = linear_path(model, found.model, nn.CrossEntropyLoss(), (x, y), n_points=5)
    assert abs(line.barrier) <= 1e-12


def test_alignment_lowers_the_barrier_between_two_solutions():
    x, y = data(80)
    a, b = fit(mlp(0, hidden=8), x, y, 400), fit(mlp(3, hidden=8), x, y, 400)
    found = connectivity.align(a, b, nn.CrossEntropyLoss(), (x, y), n_points=11)
    assert found.before.barrier == linear_path(a, b, nn.CrossEntropyLoss(), (x, y), n_points=11).barrier
    identity = sum(float((a.state_dict()[k] * b.state_dict()[k]).sum()) for k, _ in a.named_parameters())
    assert found.alignment.objective >= identity  # coordinate ascent never lowers the matching objective
    assert found.after.barrier < found.before.barrier
    shuffled, _ = randomly_permuted(a, seed=2)
    assert abs(connectivity.align(a, shuffled, nn.CrossEntropyLoss(), (x, y), n_points=5).after.barrier) <= 1e-12


class Unordered(nn.Module):
    """Square layers registered in another order than the forward pass uses them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.second = nn.Linear(4, 4)
        self.first = nn.Linear(4, 4)
        self.act = nn.Tanh()
        self.out = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.second(self.act(self.first(x)))))


def test_unsupported_layers_and_out_of_order_chains_are_refused():
    with pytest.raises(ValueError, match=r"'1' is a Embedding"):
        permutation_spec(nn.Sequential(nn.Linear(3, 3), nn.Embedding(3, 3), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match=r"'1' is a PReLU"):
        permutation_spec(nn.Sequential(nn.Linear(3, 3), nn.PReLU(), nn.Linear(3, 2)))
    scaled = nn.Tanh()
    scaled.gain = nn.Parameter(torch.ones(3))  # an element-wise layer with a weight of its own
    with pytest.raises(ValueError, match=r"layer '1' \(Tanh\) has parameters"):
        permutation_spec(nn.Sequential(nn.Linear(3, 3), scaled, nn.Linear(3, 2)))
    model = Unordered().double()
    shuffled, _ = randomly_permuted(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"not a chain in the order of its forward pass"):
        weight_matching(model, shuffled, data=(x, torch.zeros(5, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"is not a permutation of 6 units"):
        permute(mlp(0), {"0": np.zeros(6, dtype=int)})
    assert connectivity.weight_matching is weight_matching
