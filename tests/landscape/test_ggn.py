"""The forward-mode Gauss–Newton backend (``backend="jvp"``) against the exact GGN, and activation checkpointing.

Ground truth: G = Σ_b (n_b / N) J_bᵀ H_b J_b with J_b from ``torch.func.jacrev`` of the logits and H_b from
``torch.func.hessian`` of the batch's loss in its logits, on tiny float64 models; float64 products agree
with it to ~1e-15 relative, so the comparisons use 1e-10 (the summation order over unequal batches).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from landscape.autodiff import math_attention
from landscape.batch import Batch
from landscape.curvature import BACKENDS, DEFAULT_GGN_BACKEND, GGN_BACKENDS, CurvatureOperator
from landscape.data import as_batches
from landscape.losses import causal_lm_cross_entropy
from landscape.objective import as_objective
from tests.landscape.curvature_cases import assert_close, dense, exact_hessian, mlp, mlp_data, unequal


def _exact_ggn(model: nn.Module, loss_fn, batches: list, names: list[str] | None = None) -> torch.Tensor:
    """Σ_b (n_b/N) J_bᵀ H_b J_b over the named parameters (all trainable ones by default)."""
    objective = as_objective(loss_fn, model)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)}
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
    total, weights = 0.0, 0.0
    model.eval()
    for batch in as_batches(batches):

        def logits_of(v: torch.Tensor, batch: Batch = batch) -> torch.Tensor:
            named, offset = {}, 0
            for name, p in params.items():
                named[name] = v[offset : offset + p.numel()].view(p.shape)
                offset += p.numel()
            return objective.logits(objective.forward(lambda *a, **k: functional_call(model, named, a, k), batch))

        out = logits_of(flat).detach()
        with math_attention():
            jac = torch.func.jacrev(logits_of)(flat).reshape(out.numel(), -1)
        h_out = torch.func.hessian(lambda o, b=batch, z=out: objective.loss_of_logits(o.view_as(z), b))(out.reshape(-1))
        weight = objective.weight(batch)
        total = total + weight * (jac.T @ h_out.reshape(out.numel(), out.numel()) @ jac)
        weights += weight
    return total / weights


def test_jvp_is_a_ggn_backend_and_refuses_the_hessian() -> None:
    assert "jvp" in GGN_BACKENDS and "jvp" not in BACKENDS and DEFAULT_GGN_BACKEND in GGN_BACKENDS
    x, y = mlp_data()
    with pytest.raises(ValueError, match="backend 'jvp' computes the Gauss–Newton matrix only"):
        CurvatureOperator(mlp(), nn.CrossEntropyLoss(), (x, y), backend="jvp")


@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_jvp_ggn_equals_jt_hz_j(loss_name: str) -> None:
    model = mlp()
    x, y = mlp_data()
    if loss_name == "mse":
        y = torch.randn(len(x), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        loss_fn: nn.Module = nn.MSELoss()
    else:
        loss_fn = nn.CrossEntropyLoss()
    batches = unequal(x, y)
    expected = _exact_ggn(model, loss_fn, batches)
    op = CurvatureOperator(model, loss_fn, as_batches(batches), kind="ggn", backend="jvp")
    assert_close(dense(op), expected)
    # the double-backward backend gives the same matrix
    assert_close(dense(CurvatureOperator(model, loss_fn, as_batches(batches), kind="ggn", backend="autograd")),
                 expected)


def test_jvp_ggn_of_a_token_loss_over_dict_batches() -> None:
    pytest.importorskip("transformers")
    from tests.real_models import tiny_gpt2, token_batches

    model = tiny_gpt2(seed=1).double()
    batches = token_batches([[5, 2], [3], [4, 1, 2]])
    group = ["transformer.h.0.attn.c_attn.bias", "transformer.ln_f.bias"]
    loss_fn = causal_lm_cross_entropy()
    expected = _exact_ggn(model, loss_fn, batches, group)
    op = CurvatureOperator(model, loss_fn, as_batches(batches), kind="ggn", backend="jvp", params=group)
    assert op.size == expected.shape[0]
    assert_close(dense(op), expected)


def test_jvp_ggn_of_a_parameter_group_is_the_sub_block() -> None:
    model = mlp()
    x, y = mlp_data()
    names = ["0.bias", "2.weight"]
    expected = _exact_ggn(model, nn.CrossEntropyLoss(), [(x, y)], names)
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), (x, y), kind="ggn", backend="jvp", params=names)
    assert_close(dense(op), expected)


class _Checkpointed(nn.Module):
    """Two tanh blocks and a head; ``mode`` None runs them plainly, else under torch.utils.checkpoint."""

    def __init__(self, mode: str | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.mode = mode

    def _block(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.b(torch.tanh(self.a(h))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is None:
            return self.head(self._block(x))
        return self.head(checkpoint(self._block, x, use_reentrant=self.mode == "reentrant"))


@pytest.mark.parametrize(("kind", "backend"), [("hessian", b) for b in ("autograd", "autograd_batched")]
                         + [("ggn", b) for b in ("autograd", "jvp")])
def test_activation_checkpointing_gives_the_same_products(kind: str, backend: str) -> None:
    x, y = mlp_data()
    plain, checkpointed = _Checkpointed(None).double(), _Checkpointed("non_reentrant").double()
    checkpointed.load_state_dict(plain.state_dict())
    data = as_batches(unequal(x, y))
    expected = dense(CurvatureOperator(plain, nn.CrossEntropyLoss(), data, kind=kind, backend=backend))
    got = dense(CurvatureOperator(checkpointed, nn.CrossEntropyLoss(), data, kind=kind, backend=backend))
    assert_close(got, expected)
    if kind == "hessian":
        assert_close(got, exact_hessian(plain, nn.CrossEntropyLoss(), x, y))


def test_reentrant_checkpointing_is_refused_by_the_jvp_backend() -> None:
    x, y = mlp_data()
    op = CurvatureOperator(_Checkpointed("reentrant").double(), nn.CrossEntropyLoss(), (x, y), kind="ggn",
                           backend="jvp")
    with pytest.raises(RuntimeError, match="use_reentrant=False"):
        op.matvec(torch.ones(op.size, dtype=torch.float64))


class _OldStyleTanh(torch.autograd.Function):
    """tanh as an autograd.Function without ``setup_context``: torch.func has no forward mode for it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return grad * (1 - out * out)


class _OldStyleMLP(nn.Module):
    def __init__(self, custom: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.custom = custom
        self.a, self.head = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.head(_OldStyleTanh.apply(h) if self.custom else torch.tanh(h))


def test_the_default_ggn_backend_is_jvp_and_steps_back_where_forward_mode_is_missing() -> None:
    x, y = mlp_data()
    data = as_batches(unequal(x, y))
    plain, custom = _OldStyleMLP(False).double(), _OldStyleMLP(True).double()
    lean = CurvatureOperator(plain, nn.CrossEntropyLoss(), data, kind="ggn")
    assert lean.backend == "jvp"
    expected = dense(CurvatureOperator(plain, nn.CrossEntropyLoss(), data, kind="ggn", backend="autograd"))
    assert_close(dense(lean), expected)
    stepped_back = CurvatureOperator(custom, nn.CrossEntropyLoss(), data, kind="ggn")
    got = dense(stepped_back)
    assert stepped_back.backend == "autograd"
    assert_close(got, expected)
    with pytest.raises(RuntimeError, match="no forward-mode derivative"):  # asked for by name: no stepping back
        dense(CurvatureOperator(custom, nn.CrossEntropyLoss(), data, kind="ggn", backend="jvp"))


def test_jvp_ggn_is_positive_semi_definite_and_symmetric() -> None:
    x, y = mlp_data()
    got = dense(CurvatureOperator(mlp(), nn.CrossEntropyLoss(), as_batches(unequal(x, y)), kind="ggn",
                                  backend="jvp")).numpy()
    assert np.abs(got - got.T).max() <= 1e-12 * np.abs(got).max()
    assert np.linalg.eigvalsh(got).min() > -1e-12 * math.sqrt(got.shape[0])
