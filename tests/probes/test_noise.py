"""Gradient noise against an explicit loop over single-sample gradients (plain autograd, one sample at a
time) and the exact Hessian from ``torch.func.hessian`` on tiny float64 models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.callbacks import Monitor
from landscape.data import as_batches
from landscape.evaluate import LossError
from landscape.probe import ProbeContext, available
from landscape.store import Store
from probes import noise


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run many times faster on one thread than on threads that contend for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def bn_mlp() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def data(n: int = 23) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def unequal(x, y):
    return [(x[:5], y[:5]), (x[5:16], y[5:16]), (x[16:], y[16:])]


def explicit(model: nn.Module, x, y) -> tuple[np.ndarray, list[str], list[int]]:
    """Single-sample gradients [N, P] by a plain loop, in eval mode."""
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    rows = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i: i + 1]), y[i: i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]).numpy())
    return np.stack(rows), names, [p.numel() for p in model.parameters()]


def exact_hessian(model: nn.Module, x, y) -> np.ndarray:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def loss_of(v):
        named, offset = {}, 0
        for name, shape in zip(names, shapes):
            named[name] = v[offset: offset + math.prod(shape)].view(shape)
            offset += math.prod(shape)
        return nn.functional.cross_entropy(torch.func.functional_call(model, named, (x,)), y)

    return torch.func.hessian(loss_of)(torch.cat([p.detach().reshape(-1) for p in model.parameters()])).numpy()


@pytest.mark.parametrize("make", [mlp, bn_mlp])
def test_trace_cov_and_grad_norm_equal_the_explicit_loop(make):
    model = make()
    x, y = data()
    rows, _, _ = explicit(model, x, y)
    mean = rows.mean(axis=0)
    trace_cov = float(((rows - mean) ** 2).sum(axis=1).mean())  # 1/N convention
    model.train()  # the function must use eval mode itself and restore this
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = noise.gradient_noise(model, nn.CrossEntropyLoss(), unequal(x, y), chunk_size=4)
    assert got["n_samples"] == len(x)
    assert got["trace_cov"] == pytest.approx(trace_cov, rel=1e-10, abs=0)
    assert got["grad_norm_sq"] == pytest.approx(float(mean @ mean), rel=1e-10, abs=0)
    assert got["b_simple"] == pytest.approx(trace_cov / float(mean @ mean), rel=1e-10)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # one batch or another chunking gives the same numbers
    whole = noise.gradient_noise(model, nn.CrossEntropyLoss(), (x, y))
    assert whole["trace_cov"] == pytest.approx(got["trace_cov"], rel=1e-12)


def test_per_layer_split_and_snr():
    model = mlp()
    x, y = data()
    rows, names, sizes = explicit(model, x, y)
    got = noise.gradient_noise(model, nn.CrossEntropyLoss(), unequal(x, y), chunk_size=7)
    bounds = np.cumsum([0, *sizes])
    layers: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        layers.setdefault(name.rpartition(".")[0], []).extend(range(bounds[i], bounds[i + 1]))
    assert list(got["layers"]) == list(layers) == ["0", "2"]
    for layer, cols in layers.items():
        part = rows[:, cols]
        mean = part.mean(axis=0)
        trace = float(((part - mean) ** 2).sum(axis=1).mean())
        assert got["layers"][layer]["trace_cov"] == pytest.approx(trace, rel=1e-10)
        assert got["layers"][layer]["snr"] == pytest.approx(float(mean @ mean) / trace, rel=1e-10)
    assert sum(v["trace_cov"] for v in got["layers"].values()) == pytest.approx(got["trace_cov"], rel=1e-12)


def test_b_noise_equals_the_exact_hessian_computation():
    model = mlp()
    x, y = data()
    rows, _, _ = explicit(model, x, y)
    hess = exact_hessian(model, x, y)
    mean = rows.mean(axis=0)
    centered = rows - mean
    sigma = centered.T @ centered / len(x)
    trace_hs = float(np.trace(hess @ sigma))
    ghg = float(mean @ hess @ mean)
    got = noise.gradient_noise(model, nn.CrossEntropyLoss(), unequal(x, y), b_noise=True, chunk_size=6)
    assert got["trace_hessian_cov"] == pytest.approx(trace_hs, rel=1e-9)
    assert got["grad_hessian_grad"] == pytest.approx(ghg, rel=1e-9)
    assert got["b_noise"] == pytest.approx(trace_hs / ghg, rel=1e-9)
    assert got["trace_hessian_cov_stderr"] == 0.0 and got["hessian_samples"] == len(x)
    assert got["n_hvp"] == len(x) + 1

    subset = noise.gradient_noise(model, nn.CrossEntropyLoss(), unequal(x, y), b_noise=True, hessian_samples=10,
                                  seed=4)
    assert subset["hessian_samples"] == 10 and subset["n_hvp"] == 11
    assert subset["trace_hessian_cov_stderr"] > 0
    # the subset mean of g_i^T H g_i: unbiased; with this seed within 3 standard errors of the exact value
    assert abs(subset["trace_hessian_cov"] - trace_hs) <= 3 * subset["trace_hessian_cov_stderr"]
    forms = np.einsum("ip,pq,iq->i", rows, hess, rows)
    chosen = np.sort(np.random.default_rng(4).choice(len(x), size=10, replace=False))
    assert subset["trace_hessian_cov"] == pytest.approx(forms[chosen].mean() - ghg, rel=1e-9)


class OneHotMSE(nn.Module):
    """Squared error on one-hot targets: ``one_hot`` reads its input's values, which vmap cannot batch."""

    def forward(self, outputs, targets):
        return nn.functional.mse_loss(outputs, nn.functional.one_hot(targets, 3).to(outputs.dtype))


def test_a_loss_vmap_cannot_batch_falls_back_to_a_loop():
    model = mlp()
    x, y = data()
    with pytest.raises(RuntimeError, match="vmap"):  # what the fallback is for
        noise._vmapped(model, OneHotMSE(), x, y, dict(model.named_parameters()))
    looped, _ = noise.per_sample_gradients(model, OneHotMSE(), x, y)
    assert looped["0.weight"].shape == (len(x), 5, 4)
    model.eval()
    rows = []
    for i in range(len(x)):
        loss = OneHotMSE()(model(x[i: i + 1]), y[i: i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]).numpy())
    rows = np.stack(rows)
    mean = rows.mean(axis=0)
    got = noise.gradient_noise(model, OneHotMSE(), unequal(x, y), chunk_size=6)
    assert got["trace_cov"] == pytest.approx(float(((rows - mean) ** 2).sum(axis=1).mean()), rel=1e-10)
    assert got["grad_norm_sq"] == pytest.approx(float(mean @ mean), rel=1e-10)


def test_dict_batches_and_bad_losses():
    model = mlp()
    x, y = data()
    pairs = noise.gradient_noise(model, nn.CrossEntropyLoss(), unequal(x, y))
    dicts = noise.gradient_noise(model, nn.CrossEntropyLoss(), [{"inputs": a, "targets": b} for a, b in unequal(x, y)])
    assert dicts["trace_cov"] == pytest.approx(pairs["trace_cov"], rel=1e-12)
    with pytest.raises(LossError, match=r"mean of per-sample losses: on the first batch it is"):
        noise.gradient_noise(model, nn.CrossEntropyLoss(reduction="sum"), unequal(x, y))
    with pytest.raises(ValueError, match=r"hessian_samples must be an integer ≥ 2"):
        noise.gradient_noise(model, nn.CrossEntropyLoss(), (x, y), b_noise=True, hessian_samples=1)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
        noise.gradient_noise(model, nn.CrossEntropyLoss(), (x, y), chunk_size=0)


def test_probe_is_registered_and_stores_scalars_and_layer_arrays():
    assert "noise" in available()
    model = mlp()
    x, y = data()
    ctx = ProbeContext(model=model, loss_fn=nn.CrossEntropyLoss(), train=as_batches(unequal(x, y)))
    result = noise.PROBE.run(ctx, **noise.PROBE.defaults)
    direct = noise.gradient_noise(model, nn.CrossEntropyLoss(), unequal(x, y), b_noise=True, hessian_samples=32)
    assert result.valid
    assert result.scalars["b_simple"] == pytest.approx(direct["b_simple"], rel=1e-12)
    assert result.scalars["b_noise"] == pytest.approx(direct["b_noise"], rel=1e-12)  # 32 > N: exact
    assert list(result.arrays["layer_names"]) == ["0", "2"]
    assert result.arrays["layer_snr"].shape == (2,)


def test_monitor_runs_the_noise_probe_on_its_cadence(tmp_path):
    model = mlp()
    x, y = data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(tmp_path / "m.sqlite", "run", probes={"noise": {"every": 2, "hessian_samples": 4}}, every=100,
                 data=(x, y), loss_fn=nn.CrossEntropyLoss()) as monitor:
        for step in range(5):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            monitor.step(model, step, optimizer=optimizer, loss=loss)
    with Store(tmp_path / "m.sqlite", readonly=True) as store:
        frame = store.scalars(run="run", probe="noise")
        errors = store.errors()
    assert errors.empty, errors.to_dict("records")
    assert sorted(frame["step"].unique().tolist()) == [0, 2, 4]
    assert {"b_simple", "b_noise", "trace_cov", "grad_norm_sq"} <= set(frame["key"])
    assert (frame[frame.key == "b_simple"]["value"] > 0).all()
