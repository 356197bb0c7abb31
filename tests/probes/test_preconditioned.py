"""λ(P⁻¹H) against ``numpy.linalg.eigh`` of the exact ``P^{-1/2} H P^{-1/2}`` on tiny float64 models.

H comes from ``torch.func.hessian`` of the loss over all samples merged into one batch (the API gets the
same samples in unequal batches); P is accumulated by hand from the gradients the optimizer was fed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.checkpoints import SavedOptimizer
from landscape.probe import ProbeContext
from landscape.runner import run_probes
from landscape.store import Store
from probes import hessian, sharpness
from probes.preconditioned import OptimizerStateError, preconditioned_eigenvalues


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run many times faster on one thread than on threads that contend for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def data(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def unequal(x, y):
    return [(x[:7], y[:7]), (x[7:20], y[7:20]), (x[20:], y[20:])]


def exact_hessian(model: nn.Module, x, y) -> np.ndarray:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def loss_of(v):
        named, offset = {}, 0
        for name, shape in zip(names, shapes):
            count = math.prod(shape)
            named[name] = v[offset: offset + count].view(shape)
            offset += count
        return nn.functional.cross_entropy(torch.func.functional_call(model, named, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.func.hessian(loss_of)(flat).detach().numpy()


def train_adam(model, x, y, steps, **kwargs):
    """Full-batch Adam; returns the optimizer and the hand-accumulated (un-corrected) second moments."""
    optimizer = torch.optim.Adam(model.parameters(), **kwargs)
    beta2 = optimizer.param_groups[0]["betas"][1]
    second = [torch.zeros_like(p) for p in model.parameters()]
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        second = [beta2 * v + (1 - beta2) * p.grad**2 for v, p in zip(second, model.parameters())]
        optimizer.step()
    return optimizer, second


def exact_preconditioned(hess: np.ndarray, p_flat: np.ndarray) -> np.ndarray:
    d = 1.0 / np.sqrt(p_flat)
    return np.linalg.eigvalsh(d[:, None] * hess * d[None, :])[::-1]


@pytest.fixture(scope="module")
def adam_setup():
    model = mlp()
    x, y = data()
    lr, beta2, eps, steps = 0.05, 0.99, 1e-4, 6
    optimizer, second = train_adam(model, x, y, steps, lr=lr, betas=(0.9, beta2), eps=eps)
    p_flat = torch.cat([((v / (1 - beta2**steps)).sqrt() + eps).reshape(-1) for v in second]).numpy()
    return model, x, y, optimizer, exact_preconditioned(exact_hessian(model, x, y), p_flat), lr


def test_top_eigenvalues_equal_the_exact_preconditioned_hessian(adam_setup):
    model, x, y, optimizer, exact, lr = adam_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), optimizer, k=3, tol=1e-10)
    assert np.all(np.diff(got.values) <= 0)
    np.testing.assert_allclose(got.values, exact[:3], rtol=1e-8, atol=1e-8 * abs(exact[0]))
    assert got.threshold == pytest.approx(38 / lr, rel=1e-14)
    assert got.ratio == pytest.approx(got.values[0] / got.threshold, rel=1e-14)
    assert got.optimizer == "Adam"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # the saved form (what a checkpoint holds) gives the same numbers
    saved = sharpness.preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), optimizer.state_dict(), k=1,
                                                 optimizer_type="Adam", tol=1e-10)
    assert saved.values[0] == pytest.approx(exact[0], rel=1e-8)


def test_vectors_are_eigenvectors_of_p_inverse_h(adam_setup):
    model, x, y, optimizer, exact, _ = adam_setup
    got = preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), optimizer, k=1, tol=1e-10,
                                     return_vectors=True)
    names = [n for n, _ in model.named_parameters()]
    u = torch.cat([got.vectors[0][n].reshape(-1) for n in names]).numpy()
    state = [optimizer.state[p] for p in model.parameters()]
    p_flat = torch.cat([((s["exp_avg_sq"] / (1 - 0.99 ** 6)).sqrt() + 1e-4).reshape(-1) for s in state]).numpy()
    product = (exact_hessian(model, x, y) @ u) / p_flat
    np.testing.assert_allclose(product, got.values[0] * u, atol=1e-7 * abs(got.values[0]))


def test_identity_preconditioner_gives_the_plain_top_eigenvalue():
    model = mlp()
    x, y = data()
    params = list(model.parameters())
    beta2, t = 0.999, 3
    # √(v / (1 − β₂ᵗ)) + 0 = 1 for every entry: P = I
    state = {i: {"step": torch.tensor(float(t)), "exp_avg": torch.zeros_like(p),
                 "exp_avg_sq": torch.full_like(p, 1 - beta2**t)} for i, p in enumerate(params)}
    saved = {"state": state, "param_groups": [{"lr": 0.1, "betas": (0.9, beta2), "eps": 0.0, "amsgrad": False,
                                               "params": list(range(len(params)))}]}
    got = preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), saved, k=2, tol=1e-10)
    plain = hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=2, tol=1e-10)
    np.testing.assert_allclose(got.values, plain.values, rtol=1e-9)
    np.testing.assert_allclose(got.values, np.linalg.eigvalsh(exact_hessian(model, x, y))[::-1][:2], rtol=1e-8)


def test_rmsprop_and_adagrad_against_exact():
    x, y = data()
    for make in (lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-3, centered=True),
                 lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-3)):
        model = mlp()
        optimizer = make(model.parameters())
        squares, means = [torch.zeros_like(p) for p in model.parameters()], [torch.zeros_like(p) for p in model.parameters()]
        for _ in range(4):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if isinstance(optimizer, torch.optim.RMSprop):
                squares = [0.9 * s + 0.1 * p.grad**2 for s, p in zip(squares, model.parameters())]
                means = [0.9 * m + 0.1 * p.grad for m, p in zip(means, model.parameters())]
            else:
                squares = [s + p.grad**2 for s, p in zip(squares, model.parameters())]
            optimizer.step()
        if isinstance(optimizer, torch.optim.RMSprop):
            p_flat = torch.cat([((s - m**2).sqrt() + 1e-3).reshape(-1) for s, m in zip(squares, means)])
        else:
            p_flat = torch.cat([(s.sqrt() + 1e-3).reshape(-1) for s in squares])
        exact = exact_preconditioned(exact_hessian(model, x, y), p_flat.numpy())
        got = preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), optimizer, k=1, tol=1e-10)
        assert got.values[0] == pytest.approx(exact[0], rel=1e-8), type(optimizer).__name__
        assert got.threshold == pytest.approx(2 / optimizer.param_groups[0]["lr"], rel=1e-14)


def test_only_parameters_the_optimizer_moves_enter():
    model = mlp()
    x, y = data()
    head = list(model[2].parameters())
    optimizer = torch.optim.Adam(head, lr=0.01, eps=1e-4)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    full = exact_hessian(model, x, y)
    first = sum(p.numel() for p in model[0].parameters())
    block = full[first:, first:]
    p_flat = torch.cat([((optimizer.state[p]["exp_avg_sq"] / (1 - 0.999**3)).sqrt() + 1e-4).reshape(-1) for p in head])
    exact = exact_preconditioned(block, p_flat.numpy())
    got = preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), optimizer, k=1, tol=1e-10)
    assert got.values[0] == pytest.approx(exact[0], rel=1e-8)


def test_empty_state_and_unsupported_optimizer_are_one_sentence():
    model = mlp()
    x, y = data()
    with pytest.raises(OptimizerStateError, match=r"^optimizer AdamW has taken no step yet"):
        preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), torch.optim.AdamW(model.parameters()))
    with pytest.raises(OptimizerStateError, match=r"^optimizer SGD is not supported"):
        preconditioned_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(model.parameters(), lr=0.1))


def test_sharpness_probe_stores_preconditioned_stability_from_a_checkpoint(adam_setup, tmp_path):
    model, x, y, optimizer, exact, lr = adam_setup
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "optimizer_states": [optimizer.state_dict()], "global_step": 6}, folder / "epoch=0-step=6.ckpt")
    torch.save({"state_dict": model.state_dict(), "step": 7}, folder / "step_7.pt")
    from landscape.checkpoints import find_checkpoints

    with Store(tmp_path / "s.sqlite") as store:
        report = run_probes(model_factory=mlp, loss_fn=nn.CrossEntropyLoss(), train=(x, y),
                            checkpoints=find_checkpoints(folder), store=store, run="r", device="cpu", progress=False,
                            probes={"sharpness": {"steps": 2, "n_samples": 2, "adaptive": False}}, lr=lr)
        assert report.ok, report.errors
        frame = store.scalars(run="r", probe="sharpness")
        results = store.results(run="r", probe="sharpness")
    at6 = dict(zip(frame[frame.step == 6]["key"], frame[frame.step == 6]["value"]))
    assert at6["lambda_max_preconditioned"] == pytest.approx(exact[0], rel=1e-3)  # the probe's tol is 1e-4
    assert at6["preconditioned_threshold"] == pytest.approx(38 / lr, rel=1e-12)
    assert at6["preconditioned_eos_ratio"] == pytest.approx(at6["lambda_max_preconditioned"] * lr / 38, rel=1e-12)
    assert "lambda_max_preconditioned" not in set(frame[frame.step == 7]["key"])  # no optimizer state there
    assert len(results) == 2


def test_probe_notes_an_empty_state_instead_of_failing():
    model = mlp()
    x, y = data()
    empty = SavedOptimizer(torch.optim.Adam(model.parameters()).state_dict(), source=None, type_name="Adam")  # type: ignore[arg-type]
    from landscape.data import as_batches

    ctx = ProbeContext(model=model, loss_fn=nn.CrossEntropyLoss(), train=as_batches((x, y)), optimizer_state=empty)
    result = sharpness.PROBE.run(ctx, steps=1, n_samples=1, adaptive=False)
    assert "lambda_max_preconditioned" not in result.scalars
    assert result.params["preconditioned_skipped"].startswith("optimizer Adam has taken no step yet")
