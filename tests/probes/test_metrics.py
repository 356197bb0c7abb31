import math

import pytest
import torch
from torch import nn

from landscape.data import as_batches
from landscape.params import snapshot
from probes import get
from probes.base import ProbeContext
from probes.metrics import gradient_norm, parameter_norm


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x, y = torch.randn(30, 3), torch.randint(0, 2, (30,))
    return model, x, y


def test_norms_match_direct_computation():
    model, x, y = _setup()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert parameter_norm(model) == pytest.approx(float(flat.norm()), rel=1e-6)
    nn.CrossEntropyLoss()(model(x), y).backward()
    expected = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
    for p in model.parameters():
        p.grad = None
    assert gradient_norm(model, nn.CrossEntropyLoss(), [(x[:7], y[:7]), (x[7:], y[7:])]) == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_probe_reports_train_and_test_and_leaves_model_alone():
    model, x, y = _setup()
    model.train()
    before = snapshot(model)
    ctx = ProbeContext(model=model, loss_fn=nn.CrossEntropyLoss(), train=as_batches((x, y)),
                       test=as_batches((x[:10], y[:10])))
    result = get("metrics").run(ctx, **get("metrics").defaults)
    assert set(result.scalars) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "param_norm",
                                   "grad_norm"}
    assert result.scalars["train_loss"] == pytest.approx(float(nn.CrossEntropyLoss()(model(x), y).detach()), rel=1e-6)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_nan_loss_gives_an_invalid_result():
    model, x, y = _setup()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    ctx = ProbeContext(model=model, loss_fn=nn.CrossEntropyLoss(), train=as_batches((x, y)))
    result = get("metrics").run(ctx, gradient=True)
    assert not result.valid and "nan" in result.message
    assert math.isnan(result.scalars["train_loss"])
