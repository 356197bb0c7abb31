"""Tests for probes.grokking against hand computations and closed forms."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoints import Checkpoint
from landscape.data import as_batches
from probes import get, resolve_params
from probes.base import ProbeContext
from probes.grokking import (
    PROBE,
    OrthoGrad,
    absorption_threshold,
    feature_change,
    generalization_gap,
    linear_cka,
    logit_gap,
    logit_statistics,
    nlm_alignment,
    nlm_alignment_report,
    softmax_collapse,
    softmax_collapse_report,
    stablemax,
    stablemax_cross_entropy,
    update_cosine,
    weight_norm,
)

ROOT = Path(__file__).resolve().parents[2]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


# -- Softmax Collapse -----------------------------------------------------------------------------------
def test_absorption_threshold_is_log_two_over_eps() -> None:
    # eps = 2^-10, 2^-23, 2^-52, so log(2/eps) = 11, 24, 53 times log 2 (exact closed forms).
    assert absorption_threshold(torch.float16) == pytest.approx(11 * math.log(2), rel=1e-12)
    assert absorption_threshold("float32") == pytest.approx(24 * math.log(2), rel=1e-12)
    assert absorption_threshold(torch.float64) == pytest.approx(53 * math.log(2), rel=1e-12)


def test_large_margins_collapse_in_float32_but_not_float64() -> None:
    # gap 30: e^-30 = 9.4e-14 < 2^-24 (absorbed next to 1 in float32) but > 2^-53 (kept in float64).
    logits = torch.tensor([[30.0, 0.0, -5.0], [1.0, 31.0, 0.0]])
    targets = torch.tensor([0, 1])
    assert softmax_collapse(logits, targets) == 1.0
    assert F.cross_entropy(logits, targets, reduction="none").eq(0).all()  # the premise: float32 CE is exactly 0
    assert softmax_collapse(logits, targets, dtype=torch.float64) == 0.0
    report = softmax_collapse_report(logits, targets, dtype="float64")
    assert report["zero_loss_fraction"] == 0.0


def test_small_margins_do_not_collapse() -> None:
    logits = torch.tensor([[5.0, 0.0, 1.0], [0.0, 2.0, 4.5]])
    targets = torch.tensor([0, 2])
    for dtype in (torch.float16, torch.float32, torch.float64):
        report = softmax_collapse_report(logits, targets, dtype=dtype)
        assert report["sc_fraction"] == 0.0
        assert report["zero_loss_fraction"] == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_collapse_onset_at_the_absorption_threshold(dtype: torch.dtype) -> None:
    # With two classes the sum is 1 + e^-gap, which rounds to 1 exactly past log(2/eps); 0.05 on either
    # side stays clear of the rounding of the gap itself in every dtype (float16 spacing near 8 is 0.008).
    threshold = absorption_threshold(dtype)
    logits = torch.tensor([[0.0, -(threshold - 0.05)], [0.0, -(threshold + 0.05)]], dtype=torch.float64)
    targets = torch.tensor([0, 0])
    report = softmax_collapse_report(logits, targets, dtype=dtype)
    assert report["sc_fraction"] == 0.5
    assert report["zero_loss_fraction"] == 0.5
    assert softmax_collapse(logits[1:], targets[1:], dtype=dtype) == 1.0


def test_near_sc_fraction_counts_gaps_within_the_margin() -> None:
    threshold = absorption_threshold(torch.float32)  # 16.64
    gaps = torch.tensor([10.0, 14.0, 15.0, 20.0])
    logits = torch.stack([gaps, torch.zeros(4), -torch.ones(4)], dim=1)
    targets = torch.zeros(4, dtype=torch.long)
    report = softmax_collapse_report(logits, targets, margin=3.0)  # counts gap >= 13.64
    assert report["near_sc_fraction"] == 0.75
    assert softmax_collapse_report(logits, targets, margin=0.0)["near_sc_fraction"] == 0.25
    assert report["threshold"] == pytest.approx(threshold)
    np.testing.assert_allclose(report["logit_gap"], gaps.numpy())
    assert report["logit_gap_mean"] == pytest.approx(14.75)
    assert report["sc_fraction"] == 0.25  # only the gap of 20 is absorbed


def test_wrong_confident_sample_collapses_without_zero_loss() -> None:
    logits = torch.tensor([[0.0, 30.0]])
    report = softmax_collapse_report(logits, torch.tensor([0]))
    assert report["sc_fraction"] == 1.0
    assert report["zero_loss_fraction"] == 0.0


def test_logit_gap_and_statistics_hand_values() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, -4.0, 0.0]])
    np.testing.assert_array_equal(logit_gap(logits).numpy(), [1.0, 0.0])
    stats = logit_statistics(logits)
    assert stats["max_logit_mean"] == pytest.approx(1.5)
    assert stats["logit_norm"] == pytest.approx((math.sqrt(14) + 4) / 2)


def test_one_hot_targets_are_accepted() -> None:
    logits = torch.tensor([[30.0, 0.0], [0.0, 30.0]])
    one_hot = torch.eye(2)
    assert softmax_collapse_report(logits, one_hot)["zero_loss_fraction"] == 1.0


@pytest.mark.parametrize(
    ("logits", "targets", "match"),
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), "logits must be a 2-D tensor"),
        (torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), "at least 2 classes"),
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), "targets must be class indices"),
        (torch.zeros(3, 2), torch.zeros(3), "targets must be class indices"),
        (torch.zeros(3, 2), torch.full((3,), 2), r"targets must lie in \[0, 1\]"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "no samples"),
    ],
)
def test_bad_logits_or_targets_are_rejected(logits: torch.Tensor, targets: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        softmax_collapse(logits, targets)


def test_bad_dtype_and_margin_are_rejected() -> None:
    logits, targets = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="dtype must be one of"):
        softmax_collapse(logits, targets, dtype="float8")
    with pytest.raises(ValueError, match="floating-point dtype"):
        absorption_threshold(torch.int32)
    with pytest.raises(ValueError, match="margin must be"):
        softmax_collapse_report(logits, targets, margin=-1.0)


# -- StableMax ------------------------------------------------------------------------------------------
def test_stablemax_matches_the_formula_and_sums_to_one() -> None:
    logits = torch.tensor([[-1.0, 0.0, 2.0], [3.0, -3.0, 0.5]], dtype=torch.float64)
    # s(-1) = 1/2, s(0) = 1, s(2) = 3 -> [0.5, 1, 3] / 4.5; s(3) = 4, s(-3) = 1/4, s(0.5) = 1.5 -> / 5.75
    expected = torch.tensor([[0.5, 1.0, 3.0], [4.0, 0.25, 1.5]], dtype=torch.float64)
    expected = expected / expected.sum(dim=1, keepdim=True)
    probabilities = stablemax(logits)
    torch.testing.assert_close(probabilities, expected, rtol=1e-15, atol=0)  # a few float64 ulps
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, dtype=torch.float64), rtol=1e-15, atol=0)
    torch.testing.assert_close(stablemax(logits.T, dim=0), expected.T, rtol=1e-15, atol=0)


def test_stablemax_is_never_exactly_zero_where_softmax_is() -> None:
    logits = torch.tensor([[200.0, 0.0, -1e6]])
    assert (F.softmax(logits, dim=1)[0, 1:] == 0).all()  # softmax underflows to exact zeros
    probabilities = stablemax(logits)
    assert (probabilities > 0).all()
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0))


def test_stablemax_cross_entropy_hand_values() -> None:
    logits = torch.tensor([[-1.0, 0.0, 2.0], [3.0, -3.0, 0.5]])
    targets = torch.tensor([2, 1])
    # -log(3/4.5) = log 1.5; -log(0.25/5.75) = log 23
    expected = torch.tensor([math.log(1.5), math.log(23.0)], dtype=torch.float64)
    losses = stablemax_cross_entropy(logits, targets, reduction="none")
    assert losses.dtype == torch.float64
    torch.testing.assert_close(losses, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(stablemax_cross_entropy(logits, targets), expected.mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(stablemax_cross_entropy(logits, targets, "sum"), expected.sum(), rtol=1e-14, atol=0)


def test_stablemax_cross_entropy_gradient_is_finite_and_correct() -> None:
    # gradcheck compares autograd with finite differences; logits on both sides of 0 exercise both
    # branches of s (the branch not taken must not turn into NaN).
    logits = torch.tensor([[-1.3, 0.2, 2.0, 5.0], [3.0, -3.0, 0.5, -0.1]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([2, 1])
    assert torch.autograd.gradcheck(lambda z: stablemax_cross_entropy(z, targets), (logits,))
    stablemax_cross_entropy(logits.float().detach().requires_grad_(), targets).backward()


def test_stablemax_cross_entropy_rejects_bad_reduction() -> None:
    with pytest.raises(ValueError, match="reduction must be"):
        stablemax_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), reduction="max")


# -- ⊥Grad ------------------------------------------------------------------------------------------------
def _tiny_model(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _backward(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    dtype = next(model.parameters()).dtype
    x = torch.randn(16, 4, generator=generator, dtype=dtype)
    y = torch.randint(0, 3, (16,), generator=generator)
    F.cross_entropy(model(x), y).backward()


def test_orthograd_sgd_update_is_orthogonal_to_the_weights_with_the_gradient_norm() -> None:
    model = _tiny_model()
    _backward(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    optimizer = OrthoGrad(torch.optim.SGD(model.parameters(), lr=0.1))
    optimizer.step()
    for name, p in model.named_parameters():
        delta = (p.detach() - before[name]).reshape(-1)
        w, g = before[name].reshape(-1), grads[name].reshape(-1)
        # float64 model: the projection leaves |<Δθ, θ>| at rounding level relative to |Δθ|·|θ|
        assert abs(float(delta @ w)) <= 1e-12 * float(delta.norm() * w.norm())
        assert float(delta.norm()) == pytest.approx(0.1 * float(g.norm()), rel=1e-12)
        expected = g - (w @ g) / (w @ w) * w
        expected = expected * g.norm() / expected.norm()
        torch.testing.assert_close(-delta / 0.1, expected, rtol=1e-10, atol=1e-14)


def test_orthograd_leaves_the_gradient_of_a_zero_tensor_unchanged() -> None:
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    p.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    OrthoGrad(torch.optim.SGD([p], lr=1.0)).step()
    torch.testing.assert_close(p.detach(), torch.tensor([-1.0, 2.0, -0.5], dtype=torch.float64), rtol=0, atol=0)


def test_orthograd_keeps_the_wrapped_weight_decay() -> None:
    # Zero gradient: only AdamW's decoupled decay moves the weights, θ ← θ (1 − lr·wd).
    p = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    p.grad = torch.zeros(2, dtype=torch.float64)
    OrthoGrad(torch.optim.AdamW([p], lr=0.1, weight_decay=0.5)).step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.95, 1.9], dtype=torch.float64), rtol=1e-15, atol=0)


def test_orthograd_passes_the_optimizer_interface_through() -> None:
    model = _tiny_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer = OrthoGrad(inner)
    assert optimizer.param_groups is inner.param_groups
    assert optimizer.defaults is inner.defaults
    _backward(model)
    optimizer.step()
    assert optimizer.state is inner.state and len(optimizer.state) == 4
    saved = optimizer.state_dict()
    assert saved["state"].keys() == inner.state_dict()["state"].keys()
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    fresh = OrthoGrad(torch.optim.Adam(model.parameters(), lr=0.5))
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.01
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    _backward(model)
    optimizer.step()
    scheduler.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.005)


def test_orthograd_closure_and_bad_argument() -> None:
    model = _tiny_model()
    optimizer = OrthoGrad(torch.optim.SGD(model.parameters(), lr=0.1))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        x = torch.ones(2, 4, dtype=torch.float64)
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    assert isinstance(optimizer.step(closure), torch.Tensor)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        OrthoGrad(model.parameters())  # type: ignore[arg-type]


# -- NLM alignment and trajectory quantities ---------------------------------------------------------------
def _identity_classifier(weight: torch.Tensor) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    classes = weight.shape[0]
    model = nn.Linear(classes, classes, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(weight)
    return model, (torch.eye(classes, dtype=torch.float64), torch.arange(classes))


def test_nlm_cosine_is_one_when_the_gradient_is_exactly_along_minus_theta() -> None:
    # f(x) = W x on one-hot inputs e_i with label i and W = a (I − J/C). Every sample's softmax is
    # p_i = (e^a, 1, …) / (e^a + C − 1); the mean-CE gradient is q J − q C I = −q C (I − J/C) with
    # q = 1 / (C (e^a + C − 1)), i.e. exactly −θ up to a positive factor: cos(−∇L, θ) = 1.
    classes, a = 5, 2.0
    weight = a * (torch.eye(classes) - torch.ones(classes, classes) / classes)
    model, data = _identity_classifier(weight.double())
    assert nlm_alignment(model, F.cross_entropy, data) == pytest.approx(1.0, abs=1e-12)


def test_nlm_cosine_closed_form_for_an_uncentered_homogeneous_model() -> None:
    # Same data with W = a I: −∇L ∝ C I − J, whose cosine with I is sqrt((C − 1) / C).
    classes = 4
    model, data = _identity_classifier(3.0 * torch.eye(classes, dtype=torch.float64))
    model.train()
    saved = _state(model)
    report = nlm_alignment_report(model, F.cross_entropy, data)
    assert report["cosine"] == pytest.approx(math.sqrt((classes - 1) / classes), abs=1e-12)
    assert report["per_tensor"] == {"weight": pytest.approx(report["cosine"], abs=1e-15)}
    assert report["weight_norm"] == pytest.approx(3.0 * math.sqrt(classes), rel=1e-14)
    _assert_same_state(model, saved)
    assert model.training and model.weight.grad is None


def test_nlm_cosine_is_nan_for_a_zero_gradient() -> None:
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2, dtype=torch.float64))

    def zero_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return outputs.sum() * 0.0

    assert math.isnan(nlm_alignment(model, zero_loss, (torch.eye(2, dtype=torch.float64), torch.arange(2))))


def test_update_cosine_hand_case() -> None:
    # Δ = [1, 1], θ_t = [1, 0]: cos = 1/sqrt(2)
    assert update_cosine(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])) == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    first = {"a": torch.tensor([1.0]), "b": torch.tensor([0.0])}
    second = {"a": torch.tensor([2.0]), "b": torch.tensor([1.0]), "extra": torch.tensor([5.0])}
    assert update_cosine(first, second) == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    model = nn.Linear(2, 1, bias=False)
    grown = {"weight": model.weight.detach() * 3}
    assert update_cosine(model, grown) == pytest.approx(1.0, abs=1e-6)  # pure scaling: the NLM direction
    with pytest.raises(ValueError, match="share no tensor names"):
        update_cosine({"a": torch.ones(1)}, {"b": torch.ones(1)})
    with pytest.raises(ValueError, match="has shape"):
        update_cosine({"a": torch.ones(1)}, {"a": torch.ones(2)})
    with pytest.raises(TypeError, match="theta_t must be"):
        update_cosine([1.0], torch.ones(1))


def test_weight_norm_and_generalization_gap() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0]]))
        model.bias.fill_(4.0)
    assert weight_norm(model) == pytest.approx(5.0)
    assert generalization_gap({"loss": 0.1, "accuracy": 1.0}, {"loss": 2.0, "accuracy": 0.25}) == 0.75
    assert generalization_gap({"loss": 0.1, "accuracy": None}, {"loss": 2.0, "accuracy": None}) == pytest.approx(1.9)


def test_linear_cka_hand_values() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=torch.float64))
    assert linear_cka(x, 3.0 * x @ rotation + 1.0) == pytest.approx(1.0, abs=1e-12)  # invariant to rotation, scale, shift
    assert feature_change(x, x) == pytest.approx(0.0, abs=1e-12)
    # centered [-1, 0, 1] and [1/3, -2/3, 1/3] are orthogonal: CKA = 0
    assert linear_cka(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [0.0], [1.0]])) == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(linear_cka(torch.ones(3, 2), x[:3]))
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(x, x[:3])


# -- the probe ----------------------------------------------------------------------------------------------
def _classifier_and_data() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    x = torch.randn(40, 6)
    return model, (x, x[:, :3].argmax(dim=1))


def test_probe_stores_the_contract_keys_and_leaves_the_model_untouched() -> None:
    model, data = _classifier_and_data()
    previous = _state(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5).add_(0.01)
    current = _state(model)
    following = {k: v * 1.2 for k, v in current.items()}
    states = {0: previous, 10: current, 20: following}
    checkpoints = [Checkpoint(s, Path(f"step_{s}.pt")) for s in states]
    model.eval()
    ctx = ProbeContext(
        model=model, loss_fn=F.cross_entropy, train=as_batches(data), test=as_batches((data[0][:10], data[1][:10])),
        step=10, checkpoints=checkpoints, load_state=lambda c: states[c.step],
    )
    params = resolve_params(PROBE, {})
    result = PROBE.run(ctx, **params)
    assert result.valid
    expected = {
        "sc_fraction", "zero_loss_fraction", "near_sc_fraction", "logit_gap_mean", "nlm_cosine", "update_cosine",
        "weight_norm", "logit_norm", "max_logit_mean", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
        "generalization_gap", "feature_change",
    }
    assert expected <= set(result.scalars)
    assert {"nlm_cosine_per_tensor", "tensor_names", "logit_gap_hist", "logit_gap_edges"} <= set(result.arrays)
    assert list(result.arrays["tensor_names"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert result.arrays["tensor_names"].dtype.kind == "U"
    assert result.arrays["logit_gap_hist"].sum() == 40
    # θ_next = 1.2 θ_t: the update is pure scaling, cosine 1 (float32 weights: 1e-6)
    assert result.scalars["update_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert result.scalars["nlm_cosine"] == pytest.approx(nlm_alignment(model, F.cross_entropy, data), abs=1e-12)
    logits = model(data[0]).detach()
    assert result.scalars["train_loss"] == pytest.approx(float(F.cross_entropy(logits, data[1])), rel=1e-6)
    assert result.scalars["logit_norm"] == pytest.approx(logit_statistics(logits)["logit_norm"], rel=1e-6)
    assert 0.0 <= result.scalars["feature_change"] <= 1.0
    _assert_same_state(model, current)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert get("grokking") is PROBE


def test_probe_reads_neighbour_states_with_wrapper_prefixes() -> None:
    # Lightning saves "model."-prefixed keys; the neighbours are read through the checkpoint loader.
    model, data = _classifier_and_data()
    current = _state(model)
    states = {
        0: {f"model.{k}": v * 0.5 for k, v in current.items()},
        10: current,
        20: {f"model.{k}": v * 2.0 for k, v in current.items()},
    }
    ctx = ProbeContext(model=model.eval(), loss_fn=F.cross_entropy, train=as_batches(data), step=10,
                       checkpoints=[Checkpoint(s, Path(f"step_{s}.ckpt")) for s in states], load_state=lambda c: states[c.step])
    result = PROBE.run(ctx, **PROBE.defaults)
    assert result.scalars["update_cosine"] == pytest.approx(1.0, abs=1e-6)  # θ_next = 2 θ_t
    # ReLU features of a scaled first layer are scaled: the CKA is 1 and the change 0 (float32: 1e-6)
    assert result.scalars["feature_change"] == pytest.approx(0.0, abs=1e-6)
    _assert_same_state(model, current)


def test_probe_without_neighbours_omits_trajectory_keys() -> None:
    model, data = _classifier_and_data()
    model.eval()
    result = PROBE.run(ProbeContext(model=model, loss_fn=F.cross_entropy, train=as_batches(data)), **PROBE.defaults)
    assert result.valid
    assert "update_cosine" not in result.scalars and "feature_change" not in result.scalars
    assert "test_accuracy" not in result.scalars


def test_probe_rejects_regression_targets() -> None:
    model = nn.Linear(3, 2)
    data = as_batches((torch.randn(5, 3), torch.randn(5, 2)))
    result = PROBE.run(ProbeContext(model=model, loss_fn=F.mse_loss, train=data), **PROBE.defaults)
    assert not result.valid and "class-index targets" in (result.message or "")


def test_probe_marks_nan_loss_invalid() -> None:
    model, data = _classifier_and_data()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    result = PROBE.run(ProbeContext(model=model, loss_fn=F.cross_entropy, train=as_batches(data)), **PROBE.defaults)
    assert not result.valid and "train loss is nan" in (result.message or "")


@pytest.mark.parametrize(("params", "match"), [
    ({"near_margin": -1.0}, "near_margin must be"),
    ({"hist_bins": 0}, "hist_bins must be a positive integer"),
    ({"feature_samples": 2.5}, "feature_samples must be a positive integer"),
    ({"dtype": "float8"}, "dtype must be one of"),
])
def test_probe_rejects_bad_params(params: dict, match: str) -> None:
    model, data = _classifier_and_data()
    with pytest.raises(ValueError, match=match):
        PROBE.run(ProbeContext(model=model, loss_fn=F.cross_entropy, train=as_batches(data)), **resolve_params(PROBE, params))


# -- the example --------------------------------------------------------------------------------------------
def test_grokking_example_quick_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "grokking_modular_addition.py"
    spec = importlib.util.spec_from_file_location("grokking_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grokking_example"] = module
    try:
        spec.loader.exec_module(module)
        summary = module.main(["--quick", "--out", str(tmp_path / "runs")])
    finally:
        sys.modules.pop("grokking_example", None)
    from landscape.store import Store

    store_path = tmp_path / "runs" / "grokking.sqlite"
    with Store(store_path, readonly=True) as store:
        assert set(store.runs()) == {"float32-ce", "orthograd", "weight-decay"}
        for run in store.runs():
            keys = set(store.scalars(run=run, probe="monitor")["key"])
            assert {"train_loss", "sc_fraction", "test_accuracy", "lr"} <= keys
            assert store.steps(run, probe="grokking")
    assert len(summary) == 3
    assert "landscape dashboard" in capsys.readouterr().out
