"""Tests for landscape.callbacks.monitor: records, untouched training state, failures, bad arguments."""

from __future__ import annotations

import copy
import math
import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from callback_helpers import _assert_same_rng, _data, _model, _rng_states, _steps, _train

import probes
from landscape.callbacks import Monitor, logit_scalars, read_lr
from landscape.store import Store
from probes.base import Result

ROOT = Path(__file__).resolve().parents[3]


# -- records -----------------------------------------------------------------------------------------------
def test_short_run_writes_monitor_and_probe_rows_at_the_expected_steps(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = Monitor(
        tmp_path / "store.sqlite", "run-a", probes={"metrics": {"every": 10}, "grokking": {"every": 10}}, every=5,
        data=_data(), loss_fn=F.cross_entropy, test_data=_data(32, seed=1), label="demo",
    )
    _train(model, optimizer, 23, monitor)
    store = monitor.store
    assert _steps(store, "run-a", "monitor") == [0, 5, 10, 15, 20]
    assert _steps(store, "run-a", "metrics") == [0, 10, 20]
    assert _steps(store, "run-a", "grokking") == [0, 10, 20]
    keys = set(store.scalars(run="run-a", probe="monitor")["key"])
    assert {"train_loss", "lr", "grad_norm", "weight_norm", "logit_norm", "sc_fraction", "train_accuracy",
            "test_loss", "test_accuracy"} <= keys
    meta = store.run_meta("run-a")
    assert meta["lr"] == 0.05 and meta["label"] == "demo"
    grokking = store.scalars(run="run-a", probe="grokking")
    assert "feature_change" in set(grokking[grokking.step == 10]["key"])  # previous probe weights kept in memory
    assert "feature_change" not in set(grokking[grokking.step == 0]["key"])
    assert store.errors().empty
    monitor.close()


def test_monitor_scalars_match_direct_computation(tmp_path: Path) -> None:
    model = _model()
    x, y = _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    outputs = model(x)
    loss = F.cross_entropy(outputs, y)
    loss.backward()
    with Monitor(tmp_path / "s.sqlite", "r", every=1) as monitor:
        row = monitor.step(model, 0, optimizer, loss=loss, outputs=outputs, targets=y)
    assert row is not None
    grad_norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    weight_norm = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))
    # norms are summed per tensor in float32 then combined in float64: ~1e-7 relative
    assert row["grad_norm"] == pytest.approx(grad_norm, rel=1e-6)
    assert row["weight_norm"] == pytest.approx(weight_norm, rel=1e-6)
    assert row["train_loss"] == pytest.approx(float(loss.detach()), rel=1e-7)
    assert row["lr"] == 0.1
    assert row["train_accuracy"] == pytest.approx(float((outputs.argmax(1) == y).double().mean()))


def test_monitor_measures_on_a_subset_when_no_outputs_are_passed(tmp_path: Path) -> None:
    model = _model()
    x, y = _data()
    with Monitor(tmp_path / "s.sqlite", "r", every=1, data=(x, y), loss_fn=F.cross_entropy, subset_size=64) as monitor:
        row = monitor.step(model, 0)
    assert row is not None and "grad_norm" not in row and "lr" not in row  # no .grad, no optimizer
    with torch.no_grad():
        logits = model(x)
    assert row["train_loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert row["logit_norm"] == pytest.approx(float(logits.double().norm(dim=1).mean()), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_logit_scalars_and_norms_in_other_dtypes(dtype: torch.dtype) -> None:
    logits = torch.tensor([[30.0, 0.0], [1.0, 2.0]], dtype=dtype)
    out = logit_scalars(logits, torch.tensor([0, -100]), torch.float32)
    assert out["train_accuracy"] == 1.0 and out["sc_fraction"] == 1.0  # the -100 row is left out
    assert out["logit_norm"] == pytest.approx(30.0) and out["max_logit_mean"] == pytest.approx(30.0)
    from landscape.callbacks import _total_norm

    tensors = [torch.full((4,), 1.5, dtype=dtype), torch.full((3, 3), 0.5), torch.ones(2, dtype=torch.float64)]
    assert _total_norm(tensors) == pytest.approx(math.sqrt(4 * 2.25 + 9 * 0.25 + 2), rel=1e-6)
    assert math.isnan(_total_norm([]))


def test_logit_scalars_hand_values_and_sequence_outputs() -> None:
    logits = torch.tensor([[30.0, 0.0], [1.0, 2.0]])
    targets = torch.tensor([0, 0])
    out = logit_scalars(logits, targets, torch.float32)
    assert out["sc_fraction"] == 0.5  # gap 30 > 16.6 collapses in float32, gap 1 does not
    assert out["train_accuracy"] == 0.5
    assert out["max_logit_mean"] == pytest.approx(16.0)
    assert out["logit_norm"] == pytest.approx((30.0 + math.sqrt(5.0)) / 2)
    sequence = logits.reshape(1, 2, 2)
    ignored = logit_scalars(sequence, torch.tensor([[0, -100]]), torch.float32)
    assert ignored["train_accuracy"] == 1.0 and ignored["sc_fraction"] == 1.0  # the -100 token is left out
    assert logit_scalars(torch.zeros(4), None, torch.float32) == {}


def test_lr_changes_update_the_run_meta_and_reach_the_probe_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float | None] = []

    class LrProbe:
        name = "lr_probe"
        defaults: ClassVar[dict[str, Any]] = {}

        def run(self, ctx: Any, **params: Any) -> Result:
            seen.append(ctx.lr)
            return Result(scalars={"one": 1.0})

    monkeypatch.setitem(probes.registry(), "lr_probe", LrProbe())
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    with Monitor(tmp_path / "s.sqlite", "r", probes=["lr_probe"], every=1, probe_every=1, data=_data(),
                 loss_fn=F.cross_entropy) as monitor:
        monitor.step(model, 0, optimizer)
        optimizer.param_groups[0]["lr"] = 0.1
        monitor.step(model, 1, optimizer)
        assert monitor.store.run_meta("r")["lr"] == 0.1
    assert seen == [0.2, 0.1]
    assert read_lr(None) is None and read_lr(SimpleNamespace(param_groups=[{"lr": torch.tensor(0.5)}])) == 0.5


def test_calls_that_skip_steps_still_record_at_the_first_step_past_each_multiple(tmp_path: Path) -> None:
    with Monitor(tmp_path / "s.sqlite", "r", every=10) as monitor:
        written = [step for step in range(0, 40, 7) if monitor.step(_model(), step) is not None]
        assert written == [0, 14, 21, 35]  # multiples 10, 20, 30 are passed at 14, 21, 35
        assert _steps(monitor.store, "r", "monitor") == [0, 14, 21, 35]


def test_calls_off_the_multiples_from_the_first_step_still_record(tmp_path: Path) -> None:
    with Monitor(tmp_path / "s.sqlite", "r", every=10) as monitor:
        written = [step for step in range(1, 40, 5) if monitor.step(_model(), step) is not None]
        assert written == [11, 21, 31]


def test_force_runs_everything_and_log_schedule_for_probes(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with Monitor(tmp_path / "s.sqlite", "r", probes={"metrics": {"gradient": False}}, every=100, probe_every=2,
                 schedule="log", points_per_decade=2, data=_data(), loss_fn=F.cross_entropy) as monitor:
        for step in range(1, 40):
            monitor.step(model, step, optimizer)
        monitor.step(model, 41, optimizer, force=True)
        # log: 1, then max(step + 2, round(step * sqrt(10))): 1, 3, 9, 28; then the forced 41
        assert _steps(monitor.store, "r", "metrics") == [1, 3, 9, 28, 41]
        assert _steps(monitor.store, "r", "monitor") == [41]


def test_save_checkpoints_writes_files_and_registers_them(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with Monitor(tmp_path / "s.sqlite", "r", probes={"grokking": {"every": 4}}, every=4, data=_data(),
                 loss_fn=F.cross_entropy, save_checkpoints=True, checkpoint_every=2) as monitor:
        _train(model, optimizer, 9, monitor)
        saved = monitor.store.checkpoints("r")
        grokking = monitor.store.scalars(run="r", probe="grokking")
    assert [s for s, _, _ in saved] == [0, 2, 4, 6, 8]
    assert all(Path(p).is_file() and len(h) == 64 for _, p, h in saved)
    assert Path(saved[0][1]).parent == tmp_path / "checkpoints" / "r"
    state = torch.load(saved[-1][1], weights_only=True)
    assert state["step"] == 8 and torch.equal(state["state_dict"]["0.weight"], model[0].weight.detach())
    assert "feature_change" in set(grokking[grokking.step == 4]["key"])


# -- training is not disturbed ------------------------------------------------------------------------------------
@pytest.mark.parametrize("probe_device", [None, "cpu"])
def test_one_monitor_step_leaves_every_piece_of_training_state_as_it_was(tmp_path: Path, probe_device: str | None) -> None:
    model = _model(noisy=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    _train(model, optimizer, 3)
    x, y = _data()
    model.train()
    model[3].eval()  # a mixed mode must come back as it was
    F.cross_entropy(model(x), y).backward()  # fresh .grad present during the monitor call
    weights = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    modes = [m.training for m in model.modules()]
    random.random(), np.random.rand()
    rng = _rng_states()
    with Monitor(tmp_path / "s.sqlite", "r", probes={"grokking": {}, "metrics": {}}, every=1, probe_every=1,
                 data=(x, y), loss_fn=F.cross_entropy, test_data=_data(16, seed=3), probe_device=probe_device) as monitor:
        monitor.step(model, 0, optimizer)
        monitor.step(model, 1, optimizer)  # second call: trajectory quantities against the first
    _assert_same_rng(rng, _rng_states())
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    assert [m.training for m in model.modules()] == modes
    after = optimizer.state_dict()
    assert after["param_groups"] == optimizer_state["param_groups"]
    for index, entry in optimizer_state["state"].items():
        assert torch.equal(after["state"][index]["momentum_buffer"], entry["momentum_buffer"])


def test_training_with_a_monitor_is_bit_identical_to_training_without(tmp_path: Path) -> None:
    def run(with_monitor: bool) -> tuple[dict, dict, tuple]:
        random.seed(7)
        np.random.seed(7)
        model = _model(noisy=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        monitor = None
        if with_monitor:
            monitor = Monitor(tmp_path / "s.sqlite", "r", probes={"grokking": {"every": 3}, "metrics": {"every": 2}},
                              every=1, data=_data(), loss_fn=F.cross_entropy, test_data=_data(16, seed=2))
        _train(model, optimizer, 8, monitor, pass_outputs=False)
        if monitor is not None:
            assert _steps(monitor.store, "r", "grokking") == [0, 3, 6]  # the probes really ran in between
            assert _steps(monitor.store, "r", "metrics") == [0, 2, 4, 6]
            monitor.close()
        return model.state_dict(), optimizer.state_dict(), _rng_states()

    plain_weights, plain_optimizer, plain_rng = run(False)
    watched_weights, watched_optimizer, watched_rng = run(True)
    for key, value in plain_weights.items():
        assert torch.equal(value, watched_weights[key]), key
    for index, entry in plain_optimizer["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, watched_optimizer["state"][index][name]), (index, name)
    _assert_same_rng(plain_rng, watched_rng)


# -- failures ----------------------------------------------------------------------------------------------------
class _FailingProbe:
    name = "failing"
    defaults: ClassVar[dict[str, Any]] = {}

    def run(self, ctx: Any, **params: Any) -> Result:
        raise RuntimeError("boom")


class _NanProbe:
    name = "nan_probe"
    defaults: ClassVar[dict[str, Any]] = {}

    def run(self, ctx: Any, **params: Any) -> Result:
        return Result(scalars={"value": float("nan")})


def test_a_failing_probe_is_logged_once_and_training_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(probes.registry(), "failing", _FailingProbe())
    monkeypatch.setitem(probes.registry(), "nan_probe", _NanProbe())
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.warns(RuntimeWarning) as warned:
        monitor = Monitor(tmp_path / "s.sqlite", "r", probes=["failing", "nan_probe"], every=2, probe_every=2,
                          data=_data(), loss_fn=F.cross_entropy)
        _train(model, optimizer, 7, monitor)
    messages = [str(w.message) for w in warned]
    assert sum("'failing'" in m for m in messages) == 1  # warned once, not at every failure
    assert sum("'nan_probe'" in m for m in messages) == 1
    errors = monitor.store.errors(run="r")
    failing = errors[errors.probe == "failing"]
    assert list(failing.step) == [0, 2, 4, 6] and all("RuntimeError: boom" in m for m in failing.message)
    assert list(errors[errors.probe == "nan_probe"].step) == [0, 2, 4, 6]
    results = monitor.store.results(run="r", probe="nan_probe")
    assert list(results.valid) == [0, 0, 0, 0]
    assert _steps(monitor.store, "r", "monitor") == [0, 2, 4, 6]  # training and monitoring went on
    monitor.close()


def test_a_store_that_cannot_be_written_warns_and_training_continues(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = Monitor(tmp_path / "s.sqlite", "r", probes={"metrics": {"every": 2}}, every=2, data=_data(),
                      loss_fn=F.cross_entropy)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    real_write = monitor.store.write_result

    def full_disk(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(monitor.store, "write_result", full_disk)
    with pytest.warns(RuntimeWarning, match="could not write .* at step 0 .*disk is full.*training continues"):
        _train(model, optimizer, 4, monitor)  # steps 0..3: records at 0 and 2 are lost, training is not
        monitor.flush()  # the background writer's failures are reported by the next step or flush
    monkeypatch.setattr(monitor.store, "write_result", real_write)  # the disk has room again
    monitor.step(model, 4, optimizer)
    assert _steps(monitor.store, "r", "monitor") == [4]
    assert _steps(monitor.store, "r", "metrics") == [4]
    monitor.close()


def test_rows_committed_before_a_crash_survive(tmp_path: Path) -> None:
    store_path = tmp_path / "crash.sqlite"
    script = textwrap.dedent(f"""
        import os, torch, torch.nn.functional as F
        from torch import nn
        from landscape.callbacks import Monitor
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        x = torch.randn(32, 4); y = torch.randint(0, 3, (32,))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        monitor = Monitor({str(store_path)!r}, "crashy", probes={{"metrics": {{"every": 3}}}}, every=2,
                          data=(x, y), loss_fn=F.cross_entropy)
        for step in range(100):
            optimizer.zero_grad(); out = model(x); loss = F.cross_entropy(out, y); loss.backward(); optimizer.step()
            monitor.step(model, step, optimizer, loss=loss, outputs=out, targets=y)
            if step == 9:
                monitor.flush()  # commits what is queued (the writer would within its linger anyway)
                os._exit(3)  # dies without closing the store
    """)
    finished = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 3, finished.stderr
    with Store(store_path, readonly=True) as store:
        assert store.steps("crashy", probe="monitor") == [0, 2, 4, 6, 8]
        assert store.steps("crashy", probe="metrics") == [0, 3, 6, 9]
        assert len(store.scalars(run="crashy", probe="monitor", keys=["train_loss"])) == 5


# -- bad arguments ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"run": ""}, ValueError, "run must be a non-empty string"),
    ({"every": 0}, ValueError, "every must be a positive integer"),
    ({"probes": ["metrics"]}, ValueError, "need training data and a loss"),
    ({"probes": ["nonexistent"]}, KeyError, "unknown probe 'nonexistent'"),
    ({"probes": ["monitor"]}, ValueError, "monitor's own record"),
    ({"probes": {"metrics": {"bogus": 1}}}, ValueError, "has no parameter"),
    ({"probes": 5}, TypeError, "probes must be a dict"),
    ({"loss_fn": 3}, TypeError, "loss_fn must be callable"),
    ({"sc_dtype": "int8"}, ValueError, "sc_dtype must be a floating-point dtype"),
    ({"subset_size": 0}, ValueError, "subset_size must be a positive integer"),
])
def test_monitor_rejects_bad_arguments(tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    arguments = {"store": tmp_path / "s.sqlite", "run": "r", **kwargs}
    with pytest.raises(error, match=match):
        Monitor(**arguments)


def test_monitor_rejects_a_bad_store_and_model(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="store must be a path or a landscape.store.Store"):
        Monitor(3, "r")  # type: ignore[arg-type]
    Store(tmp_path / "s.sqlite").close()
    with Store(tmp_path / "s.sqlite", readonly=True) as readonly, pytest.raises(ValueError, match="read-only"):
        Monitor(readonly, "r")
    with Monitor(tmp_path / "t.sqlite", "r") as monitor, pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        monitor.step("model", 0)  # type: ignore[arg-type]


def test_an_open_store_is_shared_and_not_closed(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        for run in ("a", "b"):
            with Monitor(store, run, every=1) as monitor:
                monitor.step(_model(), 0)
        assert store.runs() == ["a", "b"]  # still open after both monitors closed


def test_monitor_relaxes_the_store_sync_unless_told_not_to(tmp_path: Path) -> None:
    # PRAGMA synchronous reads 1 for NORMAL and 2 for FULL (SQLite's default)
    with Monitor(tmp_path / "a.sqlite", "r") as monitor:
        assert monitor.store._query("PRAGMA synchronous")[0][0] == 1
    with Monitor(tmp_path / "b.sqlite", "r", sync=None) as monitor:
        assert monitor.store._query("PRAGMA synchronous")[0][0] == 2
    with Monitor(tmp_path / "c.sqlite", "r", sync="full") as monitor:
        assert monitor.store._query("PRAGMA synchronous")[0][0] == 2
    from landscape.store import StoreError

    with Store(tmp_path / "d.sqlite") as store, pytest.raises(StoreError, match="synchronous level must be"):
        store.set_synchronous("off")


