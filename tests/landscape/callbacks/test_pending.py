"""Tests for landscape.callbacks.pending: records finished a batch at a time give the numbers of records
finished one by one, survive what training does to its tensors afterwards, and reach the store and sinks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from callback_helpers import _model

from landscape.callbacks import Monitor, logit_scalars
from landscape.callbacks.pending import PendingRecords
from landscape.callbacks.scalars import KEEP_LIMIT, Gather, add_logits, gather_floats


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def scalar(self, name: str, value: float, step: int) -> None:
        if name == "monitor/train_loss":
            self.steps.append(step)


def _run(path: Path, linger: float, steps: int = 12, sinks: list | None = None) -> tuple[Monitor, list]:
    """A short run with sequence logits and ignored targets; returns the monitor and what step returned."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    monitor = Monitor(path, "r", every=1, linger=linger, sinks=sinks)
    rows = []
    for step in range(steps):
        optimizer.zero_grad()
        x = torch.randn(4, 5, 6, generator=generator)  # 4 sequences of 5 tokens
        targets = torch.randint(0, 3, (4, 5), generator=generator)
        targets[step % 4, : step % 5] = -100  # some tokens ignored, a different number each step
        outputs = model(x)
        loss = F.cross_entropy(outputs.reshape(-1, 3), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        rows.append(monitor.step(model, step, optimizer, loss=loss, outputs=outputs, targets=targets))
        outputs.data.add_(1e3)  # what training may do to its own tensors afterwards: the record kept copies
        targets.fill_(0)
    return monitor, rows


def test_records_finished_together_equal_records_finished_one_by_one(tmp_path: Path) -> None:
    recorder = _Recorder()
    batched, kept_rows = _run(tmp_path / "batched.sqlite", linger=30.0, sinks=[recorder])
    assert recorder.steps == [0] and len(batched._pending) == 11  # the first alone, the quick ones kept
    at_once, rows = _run(tmp_path / "at_once.sqlite", linger=0.0)
    assert len(at_once._pending) == 0
    for kept, row in zip(kept_rows, rows):
        assert set(kept) == set(row) >= {"train_loss", "grad_norm", "logit_norm", "sc_fraction", "train_accuracy"}
        for key, value in row.items():  # the same sums, over a stacked tensor: equal to float32 rounding
            assert kept[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert recorder.steps == list(range(12))  # reading a returned row finished its whole batch, in step order
    stored = batched.store.scalars(run="r", probe="monitor")
    assert sorted(set(stored["step"])) == list(range(12))
    assert stored.set_index(["step", "key"])["value"][(5, "train_accuracy")] == pytest.approx(rows[5]["train_accuracy"])
    batched.close()
    at_once.close()


def test_a_record_waits_at_most_linger_while_training_steps(tmp_path: Path) -> None:
    recorder = _Recorder()
    model = _model()
    x = torch.randn(8, 6)
    monitor = Monitor(tmp_path / "s.sqlite", "r", every=2, linger=0.5, sinks=[recorder])
    for step in range(4):  # records at 0 (alone: finished at once) and 2 (arrived quickly: kept)
        outputs = model(x)
        monitor.step(model, step, loss=outputs.sum(), outputs=outputs)
    assert recorder.steps == [0] and len(monitor._pending) == 1
    time.sleep(0.6)
    monitor.step(model, 5)  # a step with nothing due still finishes a record that has waited linger
    assert recorder.steps == [0, 2]
    time.sleep(0.6)
    outputs = model(x)
    monitor.step(model, 6, loss=outputs.sum(), outputs=outputs)  # more than linger after the last: at once
    assert recorder.steps == [0, 2, 6]
    monitor.close()


def test_gather_floats_stacks_records_of_one_shape_and_keeps_others_apart() -> None:
    generator = torch.Generator().manual_seed(1)
    cases = []
    for rows, ignored in [(6, 0), (6, 2), (6, 6), (9, 1), (9, 0)]:
        logits = torch.randn(rows, 4, generator=generator) * 5
        targets = torch.randint(0, 4, (rows,), generator=generator)
        targets[:ignored] = -100
        cases.append((logits, targets))
    cases.append((torch.randn(6, 4, generator=generator, dtype=torch.float64), None))
    gathers = []
    for logits, targets in cases:
        gather = Gather()
        add_logits(gather, logits, targets, torch.float32, keep=True)
        gathers.append(gather)
    for (logits, targets), values in zip(cases, gather_floats(gathers)):
        alone = logit_scalars(logits, targets, torch.float32)
        assert set(values) == set(alone)  # all six rows ignored: no logit scalars at all
        for key in alone:
            assert values[key] == pytest.approx(alone[key], rel=1e-6), key


def test_large_logits_are_reduced_at_once_rather_than_kept() -> None:
    gather = Gather()
    add_logits(gather, torch.zeros(KEEP_LIMIT // 10 + 1, 10), None, torch.float32, keep=True)
    assert all(isinstance(first, torch.Tensor) for sources, _ in gather._entries for first in sources)


def test_one_failing_record_is_reported_and_the_rest_of_its_batch_is_written() -> None:
    emitted, failed = [], []
    pending = PendingRecords(lambda step, values: emitted.append((step, values)),
                             lambda step, message: failed.append((step, message)), linger=30.0)
    for step in range(3):
        gather = Gather()
        gather.add("loss", torch.tensor(float(step)))
        if step == 1:
            gather.add_part(torch.ones(2), lambda numbers: {"broken": numbers[5]})
        pending.add(step, gather)
    pending.finish()
    assert emitted == [(0, {"loss": 0.0}), (2, {"loss": 2.0})]
    assert failed == [(1, "IndexError: list index out of range")]


def test_records_up_to_a_probe_are_finished_before_it_runs(tmp_path: Path) -> None:
    class Order:
        def __init__(self) -> None:
            self.seen: list[tuple[str, int]] = []

        def scalar(self, name: str, value: float, step: int) -> None:
            if name in ("monitor/train_loss", "weights/alpha_mean"):
                self.seen.append((name.split("/")[0], step))

    order = Order()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 48), torch.nn.ReLU(), torch.nn.Linear(48, 48))
    x = torch.randn(8, 6)
    monitor = Monitor(tmp_path / "s.sqlite", "r", every=1, linger=30.0, probes={"weights": {"every": 3}},
                      sinks=[order])
    for step in range(1, 7):
        outputs = model(x)
        monitor.step(model, step, loss=outputs.sum(), outputs=outputs)
    monitor.close()
    assert order.seen == [("monitor", 1), ("monitor", 2), ("monitor", 3), ("weights", 3), ("monitor", 4),
                          ("monitor", 5), ("monitor", 6), ("weights", 6)]
