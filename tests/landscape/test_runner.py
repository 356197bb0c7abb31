from typing import ClassVar

import pytest
import torch
from torch import nn

import probes
from landscape.checkpoints import find_checkpoints
from landscape.evaluate import LossError
from landscape.runner import pick_device, run_probes
from landscape.store import Store
from probes.base import Result


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)


@pytest.fixture()
def ckpts(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    model = _model()
    for step in (0, 10, 20):
        with torch.no_grad():
            model[0].weight.add_(0.1)
        torch.save({"state_dict": model.state_dict(), "step": step, "lr": 0.25}, folder / f"step_{step}.pt")
    return find_checkpoints(folder)


class _Recorder:
    """A probe that records the context it saw and can fail on demand."""

    name = "recorder"
    defaults: ClassVar[dict] = {"fail_at": -1, "interrupt_at": -1}

    def __init__(self):
        self.seen = []

    def run(self, ctx, **params):
        self.seen.append((ctx.step, ctx.lr, ctx.model.training, len(ctx.checkpoints)))
        if ctx.step == params["interrupt_at"]:
            raise KeyboardInterrupt
        if ctx.step == params["fail_at"]:
            raise RuntimeError("synthetic failure")
        with torch.no_grad():
            ctx.model[0].weight.add_(100.0)  # the runner must undo this
        return Result(scalars={"w": float(ctx.model[0].weight.detach().sum())}, params=dict(params))


@pytest.fixture()
def recorder(monkeypatch):
    probe = _Recorder()
    monkeypatch.setitem(probes.registry(), "recorder", probe)
    return probe


def _run(store, ckpts, probe_params, **kwargs):
    x, y = _data()
    kwargs.setdefault("log", lambda _: None)
    return run_probes(model_factory=_model, loss_fn=nn.CrossEntropyLoss(), train=(x, y), test=(x[:10], y[:10]),
                      checkpoints=ckpts, probes=probe_params, store=store, run="r", device="cpu",
                      progress=False, **kwargs)


def test_every_probe_at_every_checkpoint_then_skipped(tmp_path, ckpts, recorder):
    store = Store(tmp_path / "s.sqlite")
    report = _run(store, ckpts, {"metrics": {}, "recorder": {}})
    assert report.ok and report.computed == 6
    results = store.results()
    assert sorted(zip(results.step, results.probe)) == sorted(
        (s, p) for s in (0, 10, 20) for p in ("metrics", "recorder"))
    assert [s[1:] for s in recorder.seen] == [(0.25, False, 3)] * 3  # lr from the checkpoint, eval mode
    assert store.run_meta("r")["lr"] == 0.25
    again = _run(store, ckpts, {"metrics": {}, "recorder": {}})
    assert again.computed == 0 and again.skipped == 6 and len(recorder.seen) == 3
    forced = _run(store, ckpts, {"recorder": {}}, recompute=True)
    assert forced.computed == 3 and len(store.results()) == 6


def test_a_checkpoint_rewritten_since_is_recomputed_not_reused(tmp_path, ckpts, recorder):
    store = Store(tmp_path / "s.sqlite")
    _run(store, ckpts, {"recorder": {}})
    before = store.scalars(probe="recorder").set_index("step")["value"]
    state = torch.load(ckpts[1].path, weights_only=True)
    state["state_dict"]["0.weight"] += 1.0
    torch.save(state, ckpts[1].path)
    messages = []
    again = _run(store, ckpts, {"recorder": {}}, log=messages.append)
    assert again.computed == 1 and again.skipped == 2
    assert any("changed since its results were stored" in m and "step 10" in m for m in messages)
    after = store.scalars(probe="recorder").set_index("step")["value"]
    assert after[0] == before[0] and after[20] == before[20]
    assert after[10] == pytest.approx(before[10] + state["state_dict"]["0.weight"].numel(), rel=1e-6)
    assert len(store.results()) == 3


def test_probe_mutations_do_not_leak_between_probes(tmp_path, ckpts, recorder):
    store = Store(tmp_path / "s.sqlite")
    _run(store, ckpts, {"recorder": {}})
    values = store.scalars(probe="recorder").value.tolist()
    expected = [float(torch.load(c.path, weights_only=True)["state_dict"]["0.weight"].sum() + 100 * 32) for c in ckpts]
    assert values == pytest.approx(expected, rel=1e-6)


def test_a_failing_probe_is_recorded_and_the_run_goes_on(tmp_path, ckpts, recorder):
    store = Store(tmp_path / "s.sqlite")
    report = _run(store, ckpts, {"recorder": {"fail_at": 10}, "metrics": {}})
    assert len(report.errors) == 1 and "synthetic failure" in report.errors[0]
    assert report.computed == 5
    assert not store.has_result("r", 10, "recorder", "x")
    assert store.errors().probe.tolist() == ["recorder"]
    assert set(store.results(probe="recorder").step) == {0, 20}


def test_a_checkpoint_for_another_model_is_reported_not_fatal(tmp_path, ckpts):
    torch.save(nn.Linear(4, 3).state_dict(), ckpts[0].path.parent / "step_30.pt")
    store = Store(tmp_path / "s.sqlite")
    report = _run(store, find_checkpoints(ckpts[0].path.parent), {"metrics": {}})
    assert report.computed == 3 and len(report.errors) == 1
    assert "step_30.pt does not fit the model" in report.errors[0]
    assert 30 not in set(store.results().step)


def test_non_scalar_loss_fails_before_anything_is_written(tmp_path, ckpts):
    store = Store(tmp_path / "s.sqlite")
    x, y = _data()
    with pytest.raises(LossError, match="scalar"):
        run_probes(model_factory=_model, loss_fn=nn.CrossEntropyLoss(reduction="none"), train=(x, y),
                   checkpoints=ckpts, probes={"metrics": {}}, store=store, run="r", device="cpu", progress=False)
    assert store.results().empty


def test_interrupted_run_resumes_without_duplicates(tmp_path, ckpts, recorder):
    store = Store(tmp_path / "s.sqlite")
    params = {"metrics": {}, "recorder": {"interrupt_at": 10}}
    with pytest.raises(KeyboardInterrupt):
        _run(store, ckpts, params)
    assert len(store.results()) == 3  # metrics@0, recorder@0, metrics@10 were finished before the interrupt
    original, steps = recorder.run, []

    def resumed_run(ctx, **given):  # same params (same identity), but this time nothing interrupts
        steps.append(ctx.step)
        return original(ctx, **{**given, "interrupt_at": -1})

    recorder.run = resumed_run
    report = _run(store, ckpts, params)
    assert report.skipped == 3 and report.computed == 3 and steps == [10, 20]
    frame = store.results()
    assert len(frame) == 6 and not frame.duplicated(["run", "step", "probe", "config_hash"]).any()


def test_unknown_probe_and_unknown_param(tmp_path, ckpts):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(KeyError, match="unknown probe 'nope'"):
        _run(store, ckpts, {"nope": {}})
    with pytest.raises(ValueError, match="has no parameter"):
        _run(store, ckpts, {"metrics": {"bogus": 1}})


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")
