import pytest
import torch
from torch import nn

from landscape.params import (
    dot,
    flatten,
    norm,
    parameter_count,
    perturbed,
    preserved,
    set_point,
    snapshot,
    trainable_parameters,
    unflatten,
)


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    m[0].bias.requires_grad_(False)
    return m


def test_trainable_parameters_excludes_frozen():
    m = _model()
    names = list(trainable_parameters(m))
    assert "0.bias" not in names and "0.weight" in names
    assert parameter_count(m) == 12 + 4 + 4 + 8 + 2


def test_flatten_unflatten_roundtrip():
    m = _model()
    params = trainable_parameters(m)
    flat = flatten(params)
    back = unflatten(flat, params)
    assert all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="entries"):
        unflatten(flat[:-1], params)


def test_perturbed_moves_and_restores_bit_for_bit():
    m = _model()
    before = snapshot(m)
    d1 = {k: torch.randn_like(p) for k, p in trainable_parameters(m).items()}
    d2 = {"3.weight": torch.randn(2, 4)}
    with perturbed(m, [d1, d2], [0.3, -1.7]):
        expected = before["3.weight"] + 0.3 * d1["3.weight"] - 1.7 * d2["3.weight"]
        assert torch.allclose(m[3].weight, expected, atol=1e-6)
        assert torch.equal(m[0].bias, before["0.bias"])
    after = snapshot(m)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_perturbed_restores_after_exception():
    m = _model()
    before = snapshot(m)
    with pytest.raises(RuntimeError):
        with perturbed(m, {"3.weight": torch.ones(2, 4)}, 5.0):
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in snapshot(m).items())


def test_perturbed_rejects_unknown_or_misshaped_direction():
    m = _model()
    with pytest.raises(KeyError, match="not a trainable parameter"):
        with perturbed(m, {"0.bias": torch.ones(4)}, 1.0):
            pass
    with pytest.raises(ValueError, match="shape"):
        with perturbed(m, {"3.weight": torch.ones(4, 2)}, 1.0):
            pass


def test_preserved_restores_mode_weights_buffers_and_grads():
    m = _model()
    m.train()
    m[3].weight.grad = torch.full_like(m[3].weight, 7.0)
    before = snapshot(m)
    with preserved(m):
        assert not m.training and not m[1].training
        assert m[3].weight.grad is None
        m(torch.randn(5, 3)).sum().backward()
        with torch.no_grad():
            m[3].weight.add_(1.0)
        m.train()
        m(torch.randn(5, 3))  # updates BatchNorm running stats
    assert m.training and m[1].training
    assert torch.equal(m[3].weight.grad, torch.full_like(m[3].weight, 7.0))
    assert all(torch.equal(before[k], v) for k, v in snapshot(m).items())


def test_set_point_from_origin():
    m = _model()
    origin = {k: p.detach().clone() for k, p in trainable_parameters(m).items()}
    d = {k: torch.ones_like(p) for k, p in origin.items()}
    set_point(m, origin, [d], [2.0])
    set_point(m, origin, [d], [0.5])
    assert torch.allclose(m[3].weight, origin["3.weight"] + 0.5)


def test_dot_and_norm():
    a = {"x": torch.tensor([3.0, 4.0]), "y": torch.tensor([1.0])}
    b = {"x": torch.tensor([1.0, 1.0])}
    assert dot(a, b) == 7.0
    assert norm(a) == pytest.approx(26 ** 0.5)
