"""The curvature operator against exact linear algebra.

Ground truth (see ``curvature_cases``): the Hessian of the mean loss over all samples (one merged batch)
from ``torch.func.hessian`` on tiny float64 models, and the GGN from ``torch.func.jacrev`` and the output
Hessian. Operator comparisons use 1e-10 relative (float64 products agree to ~1e-15).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from curvature_cases import (
    CASES,
    assert_close,
    cnn,
    cnn_data,
    dense,
    exact_hessian,
    frozen_mlp,
    mlp,
    mlp_data,
    unequal,
)
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import landscape.krylov
from landscape import curvature
from landscape.curvature import (
    BACKENDS,
    CurvatureOperator,
    NonFiniteLossError,
    check_mean_loss,
    select_parameters,
)
from landscape.data import as_batches
from landscape.evaluate import LossError

# ---------------------------------------------------------------------------------------------- operator


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matvec_equals_exact_hessian_over_unequal_batches(case: str, backend: str) -> None:
    make_model, make_data = CASES[case]
    model = make_model()
    x, y = make_data()
    loss_fn = nn.CrossEntropyLoss()
    expected = exact_hessian(model, loss_fn, x, y)
    op = CurvatureOperator(model, loss_fn, as_batches(unequal(x, y)), backend=backend)
    assert op.size == expected.shape[0]
    assert_close(dense(op), expected)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_close(op.matvec(v), expected @ v)


def test_frozen_parameters_are_excluded() -> None:
    model = frozen_mlp()
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(mlp_data()))
    assert "0.bias" not in op.names
    assert op.size == sum(p.numel() for p in model.parameters()) - 8


@pytest.mark.parametrize("cache_graph", [True, False])
def test_cached_and_fresh_graphs_agree(cache_graph: bool) -> None:
    model = mlp()
    x, y = mlp_data()
    expected = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    for data in ((x, y), unequal(x, y)):
        op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(data), cache_graph=cache_graph)
        assert_close(dense(op), expected)
        assert_close(dense(op), expected)  # a second pass over a cached graph gives the same matrix


def _gradient_flops(model: nn.Module, loss_fn, batches) -> int:
    """FLOPs of one gradient of the loss over every batch (forward and backward)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with FlopCounterMode(display=False) as counter:
        for x, y in batches:
            torch.autograd.grad(loss_fn(model(x), y), params)
    return counter.get_total_flops()


@pytest.mark.parametrize("case", ["mlp", "cnn_bn"])
def test_multi_batch_graphs_are_cached_by_default_and_a_product_costs_two_gradients(case: str) -> None:
    # Gradients per product, counted (not timed): model forward passes by a hook, and FLOPs by
    # FlopCounterMode in units of one gradient over all the data. Cached: no forward pass after the
    # first product and at most 2.0 gradients per product; rebuilt: a forward pass per batch per call
    # and about 3. The products are the same (float64, 1e-12) and equal the exact Hessian's.
    make_model, make_data = CASES[case]
    model, (x, y) = make_model(), make_data()
    loss_fn, batches = nn.CrossEntropyLoss(), unequal(x, y)
    gradient = _gradient_flops(model, loss_fn, batches)
    forwards = [0]
    model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    # one column per call: a block shares one rebuilt graph between its columns
    block = torch.randn(sum(p.numel() for p in model.parameters()), 1, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))
    products, cost, passes = {}, {}, {}
    for cache in (None, False):
        op = CurvatureOperator(model, loss_fn, as_batches(batches), cache_graph=cache)
        products[cache] = op.matmat(block)  # builds (and, by default, keeps) the graphs
        forwards[0] = 0
        with FlopCounterMode(display=False) as counter:
            for _ in range(3):
                assert torch.equal(op.matmat(block), products[cache])
            cost[cache] = counter.get_total_flops() / (3 * gradient)
        passes[cache] = forwards[0]
        assert op.cached_batches == (len(op.data) if cache is None else 0) and op.cache_estimate > 0
    assert passes[None] == 0 and passes[False] == 3 * len(op.data)
    assert cost[None] <= 2.0 < 2.5 <= cost[False]
    assert_close(products[None], products[False], rtol=1e-12)
    assert_close(products[None], exact_hessian(model, loss_fn, x, y) @ block, rtol=1e-12)


def test_cache_budget_keeps_the_leading_batches_that_fit() -> None:
    model, (x, y) = mlp(), mlp_data()
    batches = as_batches(unequal(x, y))  # 7, 13 and 10 samples
    expected = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    whole = CurvatureOperator(model, nn.CrossEntropyLoss(), batches, cache_graph=True)
    assert_close(dense(whole), expected)
    estimate = whole.cache_estimate
    per_sample = estimate / 30
    for budget, kept in ((0, 0), (int(per_sample * 7.5), 1), (int(per_sample * 20.5), 2), (estimate + 1, 3)):
        op = CurvatureOperator(model, nn.CrossEntropyLoss(), batches, cache_budget=budget)
        assert_close(dense(op), expected)
        assert op.cached_batches == kept and op.cache_estimate == estimate
        assert_close(dense(op), expected)  # again, on the graphs kept and the ones rebuilt
    # a single batch keeps its graph whatever the budget: the product needs it anyway
    single = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches((x, y)), cache_budget=0)
    single.matvec(torch.ones(single.size, dtype=torch.float64))
    assert single.cached_batches == 1
    single.release()
    assert_close(dense(single), expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_products_on_parts_of_the_batches_are_the_same_operator(case: str) -> None:
    make_model, make_data = CASES[case]
    model = make_model()
    x, y = make_data()
    expected = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)), max_batch_size=4)
    # each batch cut on its own (7 → 4 + 3, 13 → 4 + 4 + 4 + 1, ...), never merged with its neighbour
    sizes = [len(part) for batch_x, _ in unequal(x, y) for part in batch_x.split(4) if len(part)]
    assert [b.n_samples for b in op.data] == sizes and sizes[:6] == [4, 3, 4, 4, 4, 1]
    assert op.cache_graph is False  # the split is for memory: no part's graph outlives its product
    assert_close(dense(op), expected)
    assert op.cached_batches == 0
    kept = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)), max_batch_size=4,
                             cache_graph=True)
    assert_close(dense(kept), expected)
    assert kept.cached_batches == len(sizes)


@pytest.mark.parametrize("size", [0, -2, 2.5, True, "4"])
def test_bad_max_batch_size_is_an_error(size: object) -> None:
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer"):
        CurvatureOperator(mlp(), nn.CrossEntropyLoss(), as_batches(mlp_data()), max_batch_size=size)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cache_graph": "yes"}, "cache_graph must be True, False or None"),
    ({"cache_budget": -1}, "cache_budget must be a number of bytes"),
    ({"cache_budget": 1.5}, "cache_budget must be a number of bytes"),
])
def test_bad_cache_arguments_are_errors(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CurvatureOperator(mlp(), nn.CrossEntropyLoss(), as_batches(mlp_data()), **kwargs)


def test_hvp_counter_counts_vectors_and_linear_operator_is_float64() -> None:
    model = mlp()
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(mlp_data()), max_block=3)
    op.matmat(torch.zeros(op.size, 8, dtype=torch.float64))
    assert op.n_hvp == 8
    op.matvec(torch.zeros(op.size, dtype=torch.float64))
    assert op.n_hvp == 9
    linear = op.as_linear_operator()
    out = linear.matvec(np.ones(op.size))
    assert out.dtype == np.float64 and out.shape == (op.size,)
    assert op.n_hvp == 10
    # scipy's ARPACK on our operator finds the same top eigenvalue as the exact Hessian (to its tolerance).
    x, y = mlp_data()
    top = np.linalg.eigvalsh(exact_hessian(model, nn.CrossEntropyLoss(), x, y).numpy())[-1]
    assert eigsh(linear, k=1, which="LA", tol=1e-10)[0][0] == pytest.approx(top, rel=1e-8)


def test_named_and_flat_vectors_round_trip() -> None:
    op = CurvatureOperator(frozen_mlp(), nn.CrossEntropyLoss(), as_batches(mlp_data()))
    flat = torch.arange(op.size, dtype=torch.float64)
    named = op.to_named(flat)
    assert list(named) == ["0.weight", "2.weight", "2.bias"] and named["0.weight"].shape == (8, 4)
    assert torch.equal(op.from_named(named), flat)
    assert torch.equal(op.from_named({"2.bias": named["2.bias"]})[-3:], flat[-3:])
    assert op.from_named({}).abs().sum() == 0


def test_float32_model_gives_float32_products() -> None:
    model = mlp().float()
    x, y = mlp_data()
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches((x.float(), y)))
    assert op.dtype == torch.float32
    assert op.matvec(torch.ones(op.size, dtype=torch.float64)).dtype == torch.float32


def jacobian_and_output_hessian(model, loss_fn, x, y):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    shapes = [p.shape for p in params.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def outputs_of(v):
        named, offset = {}, 0
        for name, shape in zip(params, shapes):
            count = math.prod(shape)
            named[name] = v[offset : offset + count].view(shape)
            offset += count
        return torch.func.functional_call(model, named, (x,))

    model.eval()
    out = outputs_of(flat).detach()
    jac = torch.func.jacrev(outputs_of)(flat).reshape(out.numel(), -1)
    h_out = torch.func.hessian(lambda o: loss_fn(o.view_as(out), y))(out.reshape(-1))
    return jac, h_out.reshape(out.numel(), out.numel())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_ggn_equals_jt_hout_j(backend: str, loss_name: str) -> None:
    model = mlp()
    x, y = mlp_data()
    if loss_name == "mse":
        y = torch.randn(len(x), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        loss_fn = nn.MSELoss()
    else:
        loss_fn = nn.CrossEntropyLoss()
    jac, h_out = jacobian_and_output_hessian(model, loss_fn, x, y)
    expected = jac.T @ h_out @ jac
    op = CurvatureOperator(model, loss_fn, as_batches(unequal(x, y)), kind="ggn", backend=backend)
    got = dense(op)
    assert_close(got, expected)
    # positive semi-definite up to rounding: the losses are convex in the outputs
    assert np.linalg.eigvalsh(got.numpy()).min() > -1e-12


@pytest.mark.parametrize(
    "selector, names",
    [
        (["2.weight"], ["2.weight"]),
        ("0", ["0.weight", "0.bias"]),
        (["0.bias", "2"], ["0.bias", "2.weight", "2.bias"]),
    ],
)
def test_parameter_group_is_the_exact_sub_block(selector, names) -> None:
    model = mlp()
    x, y = mlp_data()
    full = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    offsets, start = {}, 0
    for name, p in model.named_parameters():
        offsets[name] = range(start, start + p.numel())
        start += p.numel()
    index = torch.tensor([i for name in names for i in offsets[name]])
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)), params=selector)
    assert list(op.names) == names
    assert_close(dense(op), full[index][:, index])


def test_submodule_selects_its_parameters() -> None:
    model = mlp()
    assert list(select_parameters(model, model[2])) == ["2.weight", "2.bias"]


def test_prefix_matches_on_dot_boundary_only() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    assert list(select_parameters(model, "1")) == ["1.weight", "1.bias"]


@pytest.mark.parametrize(
    "selector, message",
    [
        ("nope", "matches no parameter"),
        (["0.bias"], "only frozen"),
        (nn.Linear(2, 2), "not a submodule"),
        ([], "non-empty list"),
    ],
)
def test_bad_parameter_selection_is_a_clear_error(selector, message) -> None:
    model = frozen_mlp()
    with pytest.raises(ValueError, match=message):
        select_parameters(model, selector)


def test_model_without_trainable_parameters_is_an_error() -> None:
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        select_parameters(model)


def test_operator_leaves_model_untouched_and_uses_eval_mode() -> None:
    model = cnn()
    model.train()
    model[1].eval()  # a mixed-mode model: every module's flag must come back as it was
    x, y = cnn_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {}
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, 0.5)
        grads[name] = p.grad
    modes = {name: m.training for name, m in model.named_modules()}
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)))
    got = dense(op)
    # the operator is the Hessian of the eval-mode function (BatchNorm on running statistics)
    assert_close(got, exact_hessian(model, nn.CrossEntropyLoss(), x, y))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert {name: m.training for name, m in model.named_modules()} == modes
    for name, p in model.named_parameters():
        assert p.grad is grads[name] and torch.all(p.grad == 0.5)


# ---------------------------------------------------------------------------------------------- loss checks


def test_non_scalar_loss_is_a_loss_error() -> None:
    with pytest.raises(LossError, match="scalar"):
        check_mean_loss(mlp(), nn.CrossEntropyLoss(reduction="none"), as_batches(mlp_data()))


def test_sum_reduced_loss_is_detected() -> None:
    with pytest.raises(LossError, match="reduction='mean'"):
        check_mean_loss(mlp(), nn.CrossEntropyLoss(reduction="sum"), as_batches(mlp_data()))


def test_mean_loss_passes_and_returns_the_sample_weighted_mean() -> None:
    model = mlp()
    x, y = mlp_data()
    with torch.no_grad():
        expected = float(nn.CrossEntropyLoss()(model(x), y))
    assert check_mean_loss(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y))) == pytest.approx(expected, rel=1e-12)


def test_nan_loss_is_a_non_finite_loss_error() -> None:
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="nan"):
        CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(mlp_data()))


# ---------------------------------------------------------------------------------------------- re-exports


def test_kernels_are_re_exported_from_the_curvature_module() -> None:
    for name in landscape.krylov.__all__:
        assert getattr(curvature, name) is getattr(landscape.krylov, name)
        assert name in curvature.__all__
