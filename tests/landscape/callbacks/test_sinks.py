"""Tests for landscape.callbacks.sinks: TensorBoard and W&B sinks on the Monitor, failing sinks, store export."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from callback_helpers import _data, _model, _train
from sink_readers import synthetic_runs, tensorboard_events, wandb_history

from landscape.callbacks import LightningHooks, Monitor, Sink, TensorBoardSink, WandbSink
from landscape.callbacks.sinks import Histogram, export_tensorboard, histograms
from landscape.store import Store


def _stored(store: Store, run: str) -> list[tuple[str, int, float]]:
    """Every finite scalar of the run's valid results as (probe/key, step, value)."""
    frame = store.scalars(run=run)
    frame = frame[frame["valid"].astype(bool)]
    return [(f"{p}/{k}", int(s), float(v)) for p, k, s, v in zip(frame.probe, frame.key, frame.step, frame.value)
            if math.isfinite(v)]


def _train_with(tmp_path: Path, sinks: list, steps: int = 9) -> Monitor:
    monitor = Monitor(tmp_path / "s.sqlite", "r", probes={"grokking": {"every": 4}}, every=2, data=_data(),
                      loss_fn=F.cross_entropy, test_data=_data(32, seed=1), sinks=sinks)
    model = _model()
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1), steps, monitor)
    return monitor


# -- histograms ----------------------------------------------------------------------------------------------
def test_a_density_on_a_grid_becomes_bins_centred_on_the_points_with_mass_density_times_width() -> None:
    found = histograms("hessian", {"density_grid": np.array([0.0, 1.0, 3.0]), "density_curve": np.array([1.0, 2.0, 0.5])})
    assert [h.name for h in found] == ["spectral_density"]
    np.testing.assert_array_equal(found[0].edges, [-0.5, 0.5, 2.0, 4.0])
    np.testing.assert_array_equal(found[0].counts, [1.0, 3.0, 1.0])  # widths 1, 1.5, 2
    assert found[0].moments() == (5.0, 1.0 * 0 + 3.0 * 1.25 + 1.0 * 3.0, 3.0 * 1.25 ** 2 + 1.0 * 9.0)
    edges = histograms("grokking", {"logit_gap_edges": np.array([0.0, 1.0, 2.0]), "logit_gap_hist": np.array([4, 6])})
    np.testing.assert_array_equal(edges[0].counts, [4, 6])
    assert histograms("grokking", {"logit_gap_edges": np.array([0.0, 1.0]), "logit_gap_hist": np.array([4, 6])}) == []
    assert histograms("metrics", {"density_grid": np.zeros(3)}) == []


# -- TensorBoard ---------------------------------------------------------------------------------------------
def test_tensorboard_sink_holds_every_recorded_scalar_exactly_and_the_histograms(tmp_path: Path) -> None:
    monitor = _train_with(tmp_path, [TensorBoardSink(tmp_path / "tb")])
    stored = _stored(monitor.store, "r")
    hist_steps = monitor.store.steps("r", probe="grokking")
    expected_hist = {s: monitor.store.arrays("r", s, "grokking", keys=["logit_gap_hist", "logit_gap_edges"])
                     for s in hist_steps}
    monitor.close()
    events = tensorboard_events(tmp_path / "tb")
    tags = set(events.Tags()["scalars"])
    assert {"monitor/train_loss", "monitor/test_accuracy", "grokking/sc_fraction"} <= tags
    assert tags == {name for name, _, _ in stored}
    for tag in tags:
        written = [(e.step, np.float32(e.value)) for e in events.Scalars(tag)]
        assert written == [(s, np.float32(v)) for name, s, v in stored if name == tag], tag
    logged = events.Histograms("grokking/logit_gap")
    assert [e.step for e in logged] == hist_steps == [0, 4, 8]
    for event in logged:
        arrays = expected_hist[event.step]
        np.testing.assert_array_equal(event.histogram_value.bucket, arrays["logit_gap_hist"])
        np.testing.assert_array_equal(event.histogram_value.bucket_limit, arrays["logit_gap_edges"][1:])


def test_export_tensorboard_writes_each_run_of_a_store_in_its_own_folder(tmp_path: Path) -> None:
    store_path = synthetic_runs().write_synthetic_store(tmp_path / "s.sqlite", n_steps=3, grid=5,
                                                        probes=("metrics", "monitor", "hessian"))
    folders = export_tensorboard(store_path, tmp_path / "tb")
    assert folders == [tmp_path / "tb" / "sgd", tmp_path / "tb" / "adam"]
    with Store(store_path, readonly=True) as store:
        for run, folder in zip(("sgd", "adam"), folders):
            events = tensorboard_events(folder)
            stored = _stored(store, run)
            assert set(events.Tags()["scalars"]) == {name for name, _, _ in stored}
            for tag in events.Tags()["scalars"]:
                written = [(e.step, np.float32(e.value)) for e in events.Scalars(tag)]
                assert written == [(s, np.float32(v)) for name, s, v in stored if name == tag], tag
            for event in events.Histograms("hessian/spectral_density"):
                arrays = store.arrays(run, event.step, "hessian")
                grid, curve = arrays["density_grid"], arrays["density_curve"]
                edges = np.concatenate([[1.5 * grid[0] - 0.5 * grid[1]], 0.5 * (grid[1:] + grid[:-1]),
                                        [1.5 * grid[-1] - 0.5 * grid[-2]]])
                np.testing.assert_allclose(event.histogram_value.bucket, curve * np.diff(edges), rtol=1e-12, atol=0)
            assert [e.step for e in events.Histograms("hessian/spectral_density")] == store.steps(run, "hessian")


# -- Weights & Biases ----------------------------------------------------------------------------------------
def test_wandb_sink_offline_logs_every_scalar_against_its_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: nothing may reach the network
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monitor = _train_with(tmp_path, [WandbSink(project="landscape-tests", dir=tmp_path / "wandb", name="r")], steps=5)
    stored = _stored(monitor.store, "r")
    gaps = monitor.store.arrays("r", 4, "grokking", keys=["logit_gap_hist", "logit_gap_edges"])
    monitor.close()
    rows = wandb_history(tmp_path / "wandb")
    logged = {(name, int(row["step"]), value) for row in rows for name, value in row.items()
              if "/" in name and not name.startswith("grokking/logit_gap/")}
    assert logged == set(stored)  # JSON keeps every double exactly
    hist = [row for row in rows if "grokking/logit_gap/values" in row]
    assert [int(r["step"]) for r in hist] == [0, 4]
    assert hist[1]["grokking/logit_gap/_type"] == "histogram"
    assert hist[1]["grokking/logit_gap/values"] == gaps["logit_gap_hist"].tolist()
    np.testing.assert_array_equal(hist[1]["grokking/logit_gap/bins"], gaps["logit_gap_edges"])


# -- failures and custom sinks ------------------------------------------------------------------------------
class _Recorder:
    """A plain object with only ``scalar`` (no base class): the smallest sink."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []

    def scalar(self, name: str, value: float, step: int) -> None:
        self.calls.append((name, step, value))


class _Flaky(Sink):
    def __init__(self) -> None:
        self.broken, self.calls, self.histograms = True, [], []

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.broken:
            raise ConnectionError("the server is gone")
        self.calls.append((name, step, value))

    def histogram(self, name: str, histogram: Histogram, step: int) -> None:
        self.histograms.append((name, step))


def test_a_plain_object_sink_receives_every_scalar_the_store_gets(tmp_path: Path) -> None:
    recorder = _Recorder()
    monitor = _train_with(tmp_path, [recorder])
    assert sorted(recorder.calls) == sorted(_stored(monitor.store, "r"))
    monitor.close()


def test_a_failing_sink_warns_once_and_neither_training_nor_the_store_notice(tmp_path: Path) -> None:
    flaky = _Flaky()
    with pytest.warns(RuntimeWarning, match=r"sink _Flaky failed in scalars\(\) \(ConnectionError: the server is gone\)") as warned:
        monitor = _train_with(tmp_path, [flaky], steps=5)
    assert sum("sink _Flaky" in str(w.message) for w in warned) == 1
    assert monitor.store.steps("r", probe="monitor") == [0, 2, 4]
    assert flaky.histograms == [("grokking/logit_gap", 0), ("grokking/logit_gap", 4)]  # histograms still worked
    flaky.broken = False  # the sink recovers: later records reach it
    model = _model()
    monitor.step(model, 6, torch.optim.SGD(model.parameters(), lr=0.1))
    monitor.flush()  # a record on a fast loop reaches the sinks when its batch is finished
    assert {step for _, step, _ in flaky.calls} == {6}
    monitor.close()
    with pytest.raises(TypeError, match=r"a sink needs a scalar\(name, value, step\) method; object has none"):
        Monitor(tmp_path / "t.sqlite", "r", sinks=[object()])


def test_the_lightning_hooks_pass_sinks_on_and_flush_them_at_train_end(tmp_path: Path) -> None:
    class Flushed(_Recorder):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    sink = Flushed()
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    hooks = LightningHooks(store=tmp_path / "s.sqlite", run="pl", every=2, data=_data(), loss_fn=F.cross_entropy,
                           sinks=[sink])
    for step in range(1, 5):
        hooks.on_train_batch_end(SimpleNamespace(global_step=step, optimizers=[optimizer]), model,
                                 {"loss": torch.tensor(0.5)}, None, step - 1)
    assert sink.flushes == 0
    hooks.on_train_end(SimpleNamespace(global_step=4, optimizers=[optimizer]), model)
    assert sink.flushes == 1
    assert ("monitor/train_loss", 2, 0.5) in sink.calls and ("monitor/lr", 4, 0.3) in sink.calls
    hooks.monitor.close()
