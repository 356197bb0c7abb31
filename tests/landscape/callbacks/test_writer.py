"""Tests for landscape.callbacks.writer: batched commits, flush and close, nothing lost, failures, the bound."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from callback_helpers import _data, _model, _train

from landscape.callbacks import Monitor
from landscape.callbacks.writer import Record, StoreWriter
from landscape.probe import Result
from landscape.store import Store

ROOT = Path(__file__).resolve().parents[3]


def _result(step: int) -> Record:
    return Record("the monitor scalars", step,
                  lambda store: store.write_result("r", step, "monitor", Result(scalars={"x": float(step)})))


def _gate() -> tuple[Record, threading.Event, threading.Event]:
    """A record whose write waits for ``release``; ``entered`` is set once the writer is inside it."""
    entered, release = threading.Event(), threading.Event()

    def write(store: Store) -> None:
        entered.set()
        assert release.wait(30), "the test never released the gate"

    return Record("the gate", None, write), entered, release


def _wait_for(condition: object, what: str) -> None:
    for _ in range(3000):  # a bound, not a speed threshold: the condition holds at once when all is well
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def _stored_steps(path: Path) -> list[int]:
    with Store(path, readonly=True) as store:
        return store.steps("r", probe="monitor")


def _commits(store: Store) -> list[str]:
    """Every COMMIT statement the store's connection runs from now on (whichever thread runs it)."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_records_that_gather_while_a_commit_runs_share_one_transaction(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        writer = StoreWriter(store, lambda key, message: None, linger=0.0)
        commits = _commits(store)
        gate, entered, release = _gate()
        writer.put(gate)
        assert entered.wait(30)
        for step in range(50):  # queued while the writer is busy with the gate's batch
            writer.put(_result(step))
        release.set()
        writer.flush()
        assert store.steps("r", probe="monitor") == list(range(50))
        assert writer.stats.written == 51 and writer.stats.commits == 2 and len(commits) == 2  # not 51
        writer.close()


def test_close_commits_everything_queued_and_batches_hold_at_most_max_batch(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        writer = StoreWriter(store, lambda key, message: None, linger=30.0, max_batch=100)
        for step in range(250):
            writer.put(_result(step))
        writer.close()  # returns at once: the close marker ends the lingering batch
        assert writer.stats.written == 250 and writer.stats.commits == 3
        with pytest.raises(RuntimeError, match="writer is closed"):
            writer.put(_result(999))
    assert _stored_steps(path) == list(range(250))


def test_a_failing_write_is_reported_and_the_rest_of_its_batch_is_kept(tmp_path: Path) -> None:
    warned: list[tuple[str, str]] = []

    def half_written(store: Store) -> None:  # writes a result, then fails: the savepoint takes it back
        store.write_result("r", 7, "monitor", Result(scalars={"x": 7.0}))
        raise sqlite3.OperationalError("database or disk is full")

    with Store(tmp_path / "s.sqlite") as store:
        writer = StoreWriter(store, lambda key, message: warned.append((key, message)), linger=0.0)
        gate, entered, release = _gate()
        writer.put(gate)
        assert entered.wait(30)
        for step in range(6):
            writer.put(_result(step))
        writer.put(Record("the monitor scalars", 7, half_written))
        writer.put(_result(8))
        release.set()
        writer.flush()
        assert warned == []  # nothing reaches the owner until it asks
        writer.report()
        assert store.steps("r", probe="monitor") == [0, 1, 2, 3, 4, 5, 8]
        assert warned == [("store: the monitor scalars", "could not write the monitor scalars at step 7 "
                           "(OperationalError: database or disk is full); training continues without it.")]
        assert writer.stats.failed == 1
        writer.close()


def test_neighbours_that_share_a_together_function_are_written_by_one_call(tmp_path: Path) -> None:
    calls: list[list[int]] = []

    def together(store: Store, items: list[tuple[int, Result]]) -> None:
        calls.append([step for step, _ in items])
        if any(step == 4 for step, _ in items):  # the group fails whole: each record is tried alone
            raise sqlite3.OperationalError("database or disk is full")
        store.write_results("r", "monitor", items)

    def grouped(step: int) -> Record:
        result = Result(scalars={"x": float(step)})
        return Record("the monitor scalars", step, lambda store: store.write_result("r", step, "monitor", result),
                      atomic=True, together=together, item=(step, result))

    with Store(tmp_path / "s.sqlite") as store:
        writer = StoreWriter(store, lambda key, message: None, linger=30.0)
        for step in range(3):
            writer.put(grouped(step))
        writer.put(_result(3))  # a record without the function cuts the run of neighbours
        for step in range(4, 7):
            writer.put(grouped(step))
        writer.close()
        assert calls == [[0, 1, 2], [4, 5, 6]]
        assert store.steps("r", probe="monitor") == list(range(7))  # the failed group's records, one by one
        assert [float(v) for v in store.scalars(run="r", keys=["x"]).sort_values("step").value] == list(range(7))


def test_a_failing_commit_writes_the_batch_again_one_record_at_a_time(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        real_batch, calls = store.batch, []

        @contextmanager
        def failing_batch() -> Iterator[None]:  # the first commit fails, the retries' do not
            calls.append(1)
            with real_batch():
                yield
                if len(calls) == 1:
                    raise sqlite3.OperationalError("disk I/O error")  # the whole batch is rolled back

        monkeypatch.setattr(store, "batch", failing_batch)
        writer = StoreWriter(store, lambda key, message: None, linger=0.0)
        for step in range(5):
            writer.put(_result(step))
        writer.close()
        assert store.steps("r", probe="monitor") == list(range(5))
        assert writer.stats.written == 5 and writer.stats.failed == 0 and len(calls) > 1


def test_a_full_queue_makes_put_wait_and_drops_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        writer = StoreWriter(store, lambda key, message: None, max_pending=4, linger=0.0)
        gate, entered, release = _gate()
        writer.put(gate)
        assert entered.wait(30)
        for step in range(4):
            writer.put(_result(step))  # fills the queue
        blocked = threading.Thread(target=writer.put, args=(_result(4),))
        blocked.start()
        _wait_for(lambda: writer.stats.waits == 1, "the fifth put found the queue full")
        assert blocked.is_alive()  # waiting for room, not dropping
        release.set()
        blocked.join(30)
        assert not blocked.is_alive()
        writer.close()
        assert store.steps("r", probe="monitor") == [0, 1, 2, 3, 4]


def test_the_monitor_warns_once_for_many_failed_writes_and_keeps_the_rest(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = Monitor(tmp_path / "s.sqlite", "r", every=1)
    store = monitor.store
    real_write = store.write_result

    def full_until_step_10(run: str, step: int, *args: object, **kwargs: object) -> int:
        if step < 10:
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(run, step, *args, **kwargs)

    real_writes = store.write_results

    def full_until_step_10_together(run: str, probe: str, items: list, **kwargs: object) -> list[int]:
        if any(step < 10 for step, _ in items):  # a group with one failing record fails whole: each is retried
            raise sqlite3.OperationalError("database or disk is full")
        return real_writes(run, probe, items, **kwargs)

    monkeypatch.setattr(store, "write_result", full_until_step_10)
    monkeypatch.setattr(store, "write_results", full_until_step_10_together)
    model = _model()
    with pytest.warns(RuntimeWarning, match="could not write the monitor scalars") as warned:
        _train(model, torch.optim.SGD(model.parameters(), lr=0.05), 20, monitor)
        monitor.close()
    assert sum("could not write" in str(w.message) for w in warned) == 1
    assert _stored_steps(tmp_path / "s.sqlite") == list(range(10, 20))


@pytest.mark.parametrize("ending", ["return", "raise"])
def test_nothing_is_lost_at_a_normal_exit_without_close(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "exit.sqlite"
    script = textwrap.dedent(f"""
        import torch, torch.nn.functional as F
        from torch import nn
        from landscape.callbacks import Monitor
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        x = torch.randn(32, 4); y = torch.randint(0, 3, (32,))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        monitor = Monitor({str(path)!r}, "r", probes={{"metrics": {{"every": 5}}}}, every=1, data=(x, y),
                          loss_fn=F.cross_entropy, linger=30.0)
        for step in range(30):
            optimizer.zero_grad(); out = model(x); loss = F.cross_entropy(out, y); loss.backward(); optimizer.step()
            monitor.step(model, step, optimizer, loss=loss, outputs=out, targets=y)
        if {ending == "raise"}:
            raise SystemExit(4)  # leaves through the interpreter's normal exit, never closing the monitor
    """)
    finished = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == (4 if ending == "raise" else 0), finished.stderr
    assert _stored_steps(path) == list(range(30))
    with Store(path, readonly=True) as store:
        assert store.steps("r", probe="metrics") == list(range(0, 30, 5))
        assert len(store.scalars(run="r", probe="monitor", keys=["train_loss"])) == 30


def test_reading_the_store_through_the_monitor_sees_every_record_so_far(tmp_path: Path) -> None:
    with Monitor(tmp_path / "s.sqlite", "r", every=1, data=_data(), loss_fn=F.cross_entropy, linger=30.0) as monitor:
        model = _model()
        _train(model, torch.optim.SGD(model.parameters(), lr=0.05), 5, monitor, pass_outputs=False)
        assert monitor.store.steps("r", probe="monitor") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_pending": 0}, "max_pending must be a positive integer"),
    ({"linger": -1.0}, "linger must be a finite number of seconds"),
    ({"sync": "off"}, "sync must be 'normal', 'full' or None"),
])
def test_bad_writer_options_are_refused_with_one_sentence(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Monitor(tmp_path / "s.sqlite", "r", **kwargs)
    assert not (tmp_path / "s.sqlite").exists()  # refused before anything was opened
