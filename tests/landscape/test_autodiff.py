"""Eval-mode batch norm as its affine map: same values, same first and second derivatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.autodiff import affine_batch_norm


def _model(dtype: torch.dtype, affine: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, affine=affine), nn.Tanh(), nn.Flatten(),
                          nn.Linear(27, 4), nn.BatchNorm1d(4)).to(dtype)
    for bn in (model[1], model[5]):
        bn.running_mean.uniform_(-2.0, 2.0)
        bn.running_var.uniform_(0.3, 3.0)
    return model.eval()


@pytest.mark.parametrize("affine", [True, False])
def test_values_gradients_and_hessian_vector_products_match_the_native_kernel(affine: bool) -> None:
    model = _model(torch.float64, affine)
    params = list(model.parameters())
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = [torch.randn_like(p) for p in params]
    results = []
    for rewrite in (False, True):
        if rewrite:
            with affine_batch_norm():
                out = model(x)
        else:
            out = model(x)
        assert (out.grad_fn.name() == "AddBackward0") == rewrite  # the last batch norm: affine or native
        grads = torch.autograd.grad(out.square().mean(), params, create_graph=True)
        hv = torch.autograd.grad(grads, params, v)
        results.append((out, grads, hv))
    (out0, g0, h0), (out1, g1, h1) = results
    assert torch.allclose(out0, out1, rtol=1e-13, atol=1e-14)
    for a, b in [*zip(g0, g1), *zip(h0, h1)]:
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)


def test_batch_statistics_and_half_precision_run_the_native_kernel() -> None:
    model = _model(torch.float32).train()
    x = torch.randn(6, 2, 5, 5)
    with affine_batch_norm():
        assert "NativeBatchNorm" in model[:2](x).grad_fn.name()
    half = _model(torch.bfloat16)
    with affine_batch_norm():
        assert "NativeBatchNorm" in half[:2](x.bfloat16()).grad_fn.name()
