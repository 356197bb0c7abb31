"""The Monitor hands the optimizer to probes that read its state: λ_max(P⁻¹H) of Adam during training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.callbacks import Monitor
from landscape.store import Store
from probes.preconditioned import preconditioned_eigenvalues


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run many times faster on one thread than on threads that contend for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("probe_device", [None, "cpu"])
def test_sharpness_during_training_stores_the_preconditioned_top_eigenvalue(tmp_path, probe_device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    expected = {}
    probes = {"sharpness": {"every": 3, "steps": 1, "n_samples": 1, "adaptive": False}}
    with Monitor(tmp_path / "m.sqlite", "adam", probes=probes, every=100, data=(x, y), loss_fn=loss_fn,
                 probe_device=probe_device) as monitor:
        for step in range(1, 7):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            state = {k: v.clone() for k, v in optimizer.state[next(model.parameters())].items()}
            monitor.step(model, step, optimizer=optimizer, loss=loss)
            after = optimizer.state[next(model.parameters())]
            assert all(torch.equal(after[k], v) for k, v in state.items())  # the optimizer state is untouched
            if step % 3 == 0:
                expected[step] = preconditioned_eigenvalues(model, loss_fn, (x, y), optimizer, tol=1e-10).values[0]
    with Store(tmp_path / "m.sqlite", readonly=True) as store:
        frame = store.scalars(run="adam", probe="sharpness", keys=["lambda_max_preconditioned",
                                                                   "preconditioned_threshold"])
    for step, value in expected.items():
        here = dict(zip(frame[frame.step == step]["key"], frame[frame.step == step]["value"]))
        assert here["lambda_max_preconditioned"] == pytest.approx(value, rel=1e-3)  # the probe's tol is 1e-4
        assert here["preconditioned_threshold"] == pytest.approx(38 / 0.01, rel=1e-12)
