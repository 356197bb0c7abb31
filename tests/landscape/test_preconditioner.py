"""Reading an adaptive optimizer's preconditioner, against statistics accumulated by hand from the gradients.

Each test feeds the same gradients to a torch optimizer and to a plain re-implementation of the
definitions (EMA of squared gradients, running sums), then compares P and the stability threshold.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.checkpoints import SavedOptimizer, read_optimizer_state
from landscape.preconditioner import (
    OptimizerStateError,
    canonical_name,
    read_preconditioner,
    stability_threshold,
    transformers_order,
)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def gradients(model: nn.Module, steps: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        out.append({n: torch.randn(p.shape, generator=generator, dtype=torch.float64) for n, p in model.named_parameters()})
    return out


def feed(model: nn.Module, optimizer: torch.optim.Optimizer, grads: list[dict[str, torch.Tensor]]) -> None:
    for g in grads:
        for name, p in model.named_parameters():
            p.grad = g[name].clone()
        optimizer.step()


def test_adam_is_sqrt_of_bias_corrected_second_moment_plus_eps_and_threshold_38_over_lr():
    model = tiny()
    beta2, eps, lr = 0.99, 1e-3, 0.01
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, beta2), eps=eps)
    grads = gradients(model, 5)
    feed(model, optimizer, grads)
    pre = read_preconditioner(model, optimizer)
    for name, _ in model.named_parameters():
        v = torch.zeros_like(grads[0][name])
        for g in grads:
            v = beta2 * v + (1 - beta2) * g[name] ** 2
        expected = (v / (1 - beta2**5)).sqrt() + eps
        assert torch.allclose(pre.diagonal[name], expected, rtol=1e-13, atol=0), name
    assert pre.optimizer == "Adam" and pre.step == 5
    assert pre.threshold == pytest.approx(38 / lr, rel=1e-14)
    corrected = read_preconditioner(model, optimizer, bias_correction1=True)
    assert torch.allclose(corrected.diagonal["0.weight"], pre.diagonal["0.weight"] * (1 - 0.9**5), rtol=1e-14)


def test_amsgrad_uses_the_running_maximum():
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.5, 0.9), eps=1e-6, amsgrad=True)
    grads = gradients(model, 4)
    grads[3] = {k: v * 1e-3 for k, v in grads[3].items()}  # the last squared gradients are tiny: max ≠ current
    feed(model, optimizer, grads)
    pre = read_preconditioner(model, optimizer)
    v = torch.zeros_like(grads[0]["2.bias"])
    peak = torch.zeros_like(v)
    for g in grads:
        v = 0.9 * v + 0.1 * g["2.bias"] ** 2
        peak = torch.maximum(peak, v)
    assert torch.allclose(pre.diagonal["2.bias"], (peak / (1 - 0.9**4)).sqrt() + 1e-6, rtol=1e-13)
    assert pre.optimizer == "AdamW"
    assert pre.threshold == pytest.approx((2 + 2 * 0.5) / (0.5 * 0.1), rel=1e-14)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_plain_and_centered_with_momentum_threshold(centered):
    model = tiny()
    alpha, eps, lr, momentum = 0.8, 1e-4, 0.02, 0.5
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr, alpha=alpha, eps=eps, centered=centered,
                                    momentum=momentum)
    grads = gradients(model, 3)
    feed(model, optimizer, grads)
    pre = read_preconditioner(model, optimizer)
    v = torch.zeros_like(grads[0]["0.weight"])
    mean = torch.zeros_like(v)
    for g in grads:
        v = alpha * v + (1 - alpha) * g["0.weight"] ** 2
        mean = alpha * mean + (1 - alpha) * g["0.weight"]
    expected = ((v - mean**2) if centered else v).sqrt() + eps
    assert torch.allclose(pre.diagonal["0.weight"], expected, rtol=1e-12)
    assert pre.threshold == pytest.approx((2 + 2 * momentum) / lr, rel=1e-14)


def test_adagrad_running_sum_and_decayed_step_size():
    model = tiny()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.3, lr_decay=0.1, eps=1e-5, initial_accumulator_value=0.2)
    grads = gradients(model, 4)
    feed(model, optimizer, grads)
    pre = read_preconditioner(model, optimizer)
    total = 0.2 + sum(g["2.weight"] ** 2 for g in grads)
    assert torch.allclose(pre.diagonal["2.weight"], total.sqrt() + 1e-5, rtol=1e-13)
    next_lr = 0.3 / (1 + 4 * 0.1)  # the step size of the coming (fifth) step
    assert pre.lr == pytest.approx(next_lr, rel=1e-14) and pre.threshold == pytest.approx(2 / next_lr, rel=1e-14)


def test_groups_with_another_learning_rate_are_folded_into_p():
    model = tiny()
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    optimizer = torch.optim.Adam([{"params": first, "lr": 0.01}, {"params": second, "lr": 0.04}])
    feed(model, optimizer, gradients(model, 2))
    pre = read_preconditioner(model, optimizer)
    state = optimizer.state[second[0]]
    base = (state["exp_avg_sq"] / (1 - 0.999**2)).sqrt() + 1e-8
    assert torch.allclose(pre.diagonal["2.weight"], base * (0.01 / 0.04), rtol=1e-13)
    assert pre.lr == 0.01


def test_state_dict_and_saved_forms_equal_the_live_optimizer():
    model = tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    feed(model, optimizer, gradients(model, 3))
    live = read_preconditioner(model, optimizer)
    for form in (optimizer.state_dict(), SavedOptimizer(optimizer.state_dict(), source=None)):  # type: ignore[arg-type]
        saved = read_preconditioner(model, form)
        assert saved.optimizer == "Adam" and saved.threshold == live.threshold
        for name in live.diagonal:
            assert torch.equal(saved.diagonal[name], live.diagonal[name])
    named = torch.optim.Adam(model.named_parameters(), lr=0.01)  # saves param_names in its groups
    feed(model, named, gradients(model, 3))
    by_name = read_preconditioner(model, named.state_dict())
    assert torch.equal(by_name.diagonal["2.bias"], live.diagonal["2.bias"])


class Wrapped(torch.optim.Optimizer):
    """Like accelerate's AcceleratedOptimizer: a torch optimizer that keeps the real one in ``.optimizer``."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.optimizer = inner


def test_a_wrapped_optimizer_is_read_through_its_wrapper():
    model = tiny()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01)
    feed(model, optimizer, gradients(model, 2))
    wrapped = read_preconditioner(model, Wrapped(optimizer))
    assert wrapped.optimizer == "RMSprop"
    assert torch.equal(wrapped.diagonal["0.weight"], read_preconditioner(model, optimizer).diagonal["0.weight"])


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(self.fc(x)))


def test_transformers_layout_maps_the_decay_group_first():
    torch.manual_seed(0)
    model = WithNorm().double()
    order = transformers_order(model)
    assert order == ["fc.weight", "head.weight", "fc.bias", "ln.weight", "ln.bias", "head.bias"]
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([{"params": [params[n] for n in order[:2]], "weight_decay": 0.1},
                                   {"params": [params[n] for n in order[2:]], "weight_decay": 0.0}])
    feed(model, optimizer, gradients(model, 2))
    live = read_preconditioner(model, optimizer)
    saved = read_preconditioner(model, SavedOptimizer(optimizer.state_dict(), source=None, layout="transformers"))  # type: ignore[arg-type]
    for name in live.diagonal:
        assert torch.equal(saved.diagonal[name], live.diagonal[name]), name
    # the same state read in model order puts ln.weight's statistics on head.weight: the shapes tell
    with pytest.raises(OptimizerStateError, match=r"AdamW's state does not fit the model: exp_avg_sq of 'fc.bias'"):
        read_preconditioner(model, optimizer.state_dict())


def test_bad_optimizers_get_one_sentence_naming_the_class():
    model = tiny()
    with pytest.raises(OptimizerStateError, match=r"^optimizer Adam has taken no step yet"):
        read_preconditioner(model, torch.optim.Adam(model.parameters()))
    with pytest.raises(OptimizerStateError, match=r"^optimizer Adagrad has taken no step yet"):
        read_preconditioner(model, torch.optim.Adagrad(model.parameters()))
    with pytest.raises(OptimizerStateError, match=r"^optimizer SGD is not supported .* supported: Adam, AdamW"):
        read_preconditioner(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(OptimizerStateError, match=r"^optimizer Lion is not supported"):
        canonical_name("Lion")
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    feed(model, sgd, gradients(model, 1))
    with pytest.raises(OptimizerStateError, match=r"cannot tell the optimizer from its state entries \['momentum_buffer'\]"):
        read_preconditioner(model, sgd.state_dict())
    with pytest.raises(OptimizerStateError, match=r"state is empty"):
        read_preconditioner(model, torch.optim.Adam(model.parameters()).state_dict())
    other = nn.Linear(3, 2).double()
    adam = torch.optim.Adam(other.parameters())
    feed(other, adam, gradients(other, 1))
    with pytest.raises(OptimizerStateError, match=r"covers 2 parameter tensors but the model has 4"):
        read_preconditioner(model, adam.state_dict())
    with pytest.raises(OptimizerStateError, match=r"^optimizer Adam holds none of this model's parameters"):
        read_preconditioner(model, adam)
    with pytest.raises(OptimizerStateError, match=r"learning rate must be a positive"):
        stability_threshold("Adam", 0.0, beta1=0.9)
    assert math.isclose(stability_threshold("adagrad", 0.5), 4.0)


def test_optimizer_state_is_found_in_lightning_plain_and_transformers_checkpoints(tmp_path):
    model = tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    feed(model, optimizer, gradients(model, 2))
    state = optimizer.state_dict()
    torch.save({"state_dict": model.state_dict(), "optimizer_states": [state], "global_step": 2}, tmp_path / "a.ckpt")
    torch.save({"model": model.state_dict(), "optimizer": state}, tmp_path / "b.pt")
    torch.save(model.state_dict(), tmp_path / "c.pt")
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    torch.save(state, folder / "optimizer.pt")
    for path, layout in ((tmp_path / "a.ckpt", "order"), (tmp_path / "b.pt", "order"),
                         (folder / "pytorch_model.bin", "transformers")):
        found = read_optimizer_state(path)
        assert found is not None and found.layout == layout
        assert torch.equal(found.state_dict["state"][0]["exp_avg_sq"], state["state"][0]["exp_avg_sq"])
    assert read_optimizer_state(tmp_path / "c.pt") is None
