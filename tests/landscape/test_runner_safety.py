"""The runner never reuses a number computed from other inputs, checks the loss once before any write, and
shares work with a concurrent run instead of repeating it; the Monitor refuses a summing loss too."""

from __future__ import annotations

import threading
import time
import warnings
from typing import ClassVar

import pytest
import torch
from torch import nn

import probes
from landscape.callbacks import Monitor
from landscape.checkpoints import find_checkpoints
from landscape.data import DataError, as_batches
from landscape.evaluate import LossError, check_mean_reduction
from landscape.identity import data_fingerprint, describe
from landscape.runner import run_probes
from landscape.store import Store
from probes.base import Result


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)


@pytest.fixture()
def ckpts(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    model = _model()
    for step in (0, 10, 20):
        with torch.no_grad():
            model[0].weight.add_(0.1)
        torch.save({"state_dict": model.state_dict(), "step": step}, folder / f"step_{step}.pt")
    return find_checkpoints(folder)


class _Counting:
    """Counts its runs per step; optionally slow, so that two runs overlap."""

    name = "counting"
    defaults: ClassVar[dict] = {}
    version = 1

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.calls, self.lock = delay, [], threading.Lock()

    def run(self, ctx, **params):
        with self.lock:
            self.calls.append(ctx.step)
        time.sleep(self.delay)
        return Result(scalars={"w": float(ctx.model[0].weight.detach().sum())}, params=dict(params))


@pytest.fixture()
def counting(monkeypatch):
    probe = _Counting(delay=0.2)
    monkeypatch.setitem(probes.registry(), "counting", probe)
    return probe


def _run(store, ckpts, *, loss_fn=None, data=None, probe_params=None, **kwargs):
    kwargs.setdefault("log", lambda _: None)
    return run_probes(model_factory=_model, loss_fn=loss_fn or nn.CrossEntropyLoss(), train=data or _data(),
                      checkpoints=ckpts, probes=probe_params or {"counting": {}}, store=store, run="r", device="cpu",
                      progress=False, **kwargs)


def test_the_python_api_tells_losses_data_and_probe_versions_apart(tmp_path, ckpts, counting):
    store = Store(tmp_path / "s.sqlite")
    notes: list[str] = []
    assert _run(store, ckpts).computed == 3
    assert _run(store, ckpts).skipped == 3
    assert _run(store, ckpts, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1), log=notes.append).computed == 3
    assert any("(loss)" in n for n in notes)
    assert _run(store, ckpts, data=_data(seed=2)).computed == 3
    counting.version = 2
    notes.clear()
    assert _run(store, ckpts, log=notes.append).computed == 3
    assert any("(probe version)" in n for n in notes)
    assert len(store.results()) == 12 and len(counting.calls) == 12


def test_describe_and_fingerprint_follow_what_computes_the_numbers():
    assert describe(nn.CrossEntropyLoss()) != describe(nn.CrossEntropyLoss(reduction="sum"))
    assert describe(nn.CrossEntropyLoss(weight=torch.ones(3))) != describe(nn.CrossEntropyLoss(weight=torch.arange(3.0)))
    assert describe(nn.CrossEntropyLoss()) == describe(nn.CrossEntropyLoss())
    x, y = _data()
    same = data_fingerprint(as_batches((x, y)), None)
    assert same == data_fingerprint(as_batches((x.clone(), y.clone())), None)
    x[3, 2] += 1e-6
    assert same != data_fingerprint(as_batches((x, y)), None)
    assert same != data_fingerprint(as_batches(_data(), batch_size=16), None)  # other batch boundaries


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(reduction="sum"),
                                  lambda o, t: nn.functional.cross_entropy(o, t, reduction="sum") / 2])
def test_a_loss_that_is_no_mean_is_refused_before_any_write(tmp_path, ckpts, counting, loss):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(LossError, match="must return the mean loss over the batch"):
        _run(store, ckpts, loss_fn=loss)
    assert store.results().empty and store.runs() == [] and counting.calls == []


def test_mean_type_losses_pass_the_check():
    outputs, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, -100])
    for loss in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2])),
                 nn.CrossEntropyLoss(label_smoothing=0.2)):
        assert check_mean_reduction(loss, outputs, targets)
    assert check_mean_reduction(nn.MSELoss(), torch.randn(8, 2), torch.randn(8, 2))
    assert not check_mean_reduction(nn.CrossEntropyLoss(), outputs[:1], targets[:1])  # one sample: undecided
    with pytest.raises(LossError, match="it is their sum"):
        check_mean_reduction(nn.MSELoss(reduction="sum"), torch.randn(8, 2), torch.randn(8, 2))


def test_a_bad_label_anywhere_is_one_error_before_any_write(tmp_path, ckpts, counting):
    store = Store(tmp_path / "s.sqlite")
    x, y = _data()
    y[37] = 3
    with pytest.raises(DataError, match="train data batch 0 holds the class label 3, but the model has 3 outputs"):
        _run(store, ckpts, data=(x, y))
    xt, yt = _data(seed=5)
    yt[15] = -1
    with pytest.raises(DataError, match="test data batch 0 holds the class label -1"):
        _run(store, ckpts, test=(xt, yt))
    assert store.results().empty and counting.calls == []


def test_two_concurrent_runs_compute_each_result_once(tmp_path, ckpts, counting):
    path = tmp_path / "s.sqlite"
    reports = {}

    def work(name: str) -> None:
        with Store(path) as store:
            reports[name] = _run(store, ckpts)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counting.calls) == [0, 10, 20]  # no result computed twice
    a, b = reports["a"], reports["b"]
    # what one run did not compute, the other did: seen as stored already or as stored meanwhile, by timing
    assert a.computed + b.computed == 3 and a.by_other + b.by_other + a.skipped + b.skipped == 3 and a.ok and b.ok
    assert a.computed + a.by_other + a.skipped == 3 == b.computed + b.by_other + b.skipped
    with Store(path, readonly=True) as store:
        assert len(store.results()) == 3
        assert store._query("SELECT COUNT(*) FROM claims")[0][0] == 0


def test_a_failing_probe_releases_its_lease(tmp_path, ckpts, monkeypatch):
    class Failing(_Counting):
        name = "failing"

        def run(self, ctx, **params):
            raise RuntimeError("synthetic")

    monkeypatch.setitem(probes.registry(), "failing", Failing())
    store = Store(tmp_path / "s.sqlite")
    report = _run(store, ckpts, probe_params={"failing": {}})
    assert len(report.errors) == 3 and store._query("SELECT COUNT(*) FROM claims")[0][0] == 0


def test_the_monitor_refuses_a_summing_loss_and_stores_no_loss_numbers(tmp_path):
    model = _model()
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Monitor(tmp_path / "m.sqlite", "run", every=1, data=(x, y), loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                     probes={"metrics": {"every": 1}}) as monitor:
            for step in range(3):
                monitor.step(model, step)
    with Store(tmp_path / "m.sqlite", readonly=True) as store:
        assert store.scalars().empty  # neither the monitor's loss nor the probe's was stored
        messages = store.errors().message.tolist()
    assert messages and all("must return the mean loss over the batch" in m for m in messages)
    assert any("must return the mean loss" in str(w.message) for w in caught)
