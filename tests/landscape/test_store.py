import sqlite3
import threading

import numpy as np
import pytest

from landscape.store import SCHEMA_VERSION, Store, StoreError, config_hash
from probes.base import Result


def _result(value=1.0, **params):
    return Result(scalars={"loss": value, "acc": 0.5}, arrays={"grid": np.arange(6.0).reshape(2, 3)},
                  params=params or {"k": 1})


def test_write_and_read_back(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.add_run("a", {"lr": 0.1})
        store.write_result("a", 10, "metrics", _result(2.0))
        frame = store.scalars()
        assert list(frame.columns[:5]) == ["run", "step", "probe", "key", "value"]
        assert dict(zip(frame.key, frame.value)) == {"acc": 0.5, "loss": 2.0}
        arrays = store.arrays("a", 10, "metrics")
        assert np.array_equal(arrays["grid"], np.arange(6.0).reshape(2, 3))
        assert arrays["grid"].dtype == np.float64
        assert store.run_meta("a") == {"lr": 0.1}
        assert store.steps("a") == [10]


def test_identity_is_run_step_probe_params(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    chash = config_hash("metrics", {"k": 1})
    assert not store.has_result("a", 1, "metrics", chash)
    store.write_result("a", 1, "metrics", _result(1.0, k=1))
    assert store.has_result("a", 1, "metrics", chash)
    store.write_result("a", 1, "metrics", _result(3.0, k=1))  # same identity: replaced, not duplicated
    store.write_result("a", 1, "metrics", _result(5.0, k=2))  # other params: a second result
    results = store.results()
    assert len(results) == 2
    assert sorted(store.scalars(keys=["loss"]).value) == [3.0, 5.0]
    assert config_hash("m", {"a": 1, "b": 2}) == config_hash("m", {"b": 2, "a": 1})


def test_how_a_result_is_computed_is_not_part_of_its_identity(tmp_path):
    # max_batch_size changes the memory of the products, not the result: stored, but not hashed
    from landscape.identity import identity, params_identity

    plain = {"k": 5, "tol": 1e-4}
    assert config_hash("hessian", {**plain, "max_batch_size": 4}) == config_hash("hessian", plain)
    assert config_hash("hessian", {**plain, "max_batch_size": None}) == config_hash("hessian", plain)
    assert identity("hessian", {**plain, "max_batch_size": 2}, {}) == identity("hessian", plain, {})
    assert params_identity("hessian", {**plain, "max_batch_size": 2}) == params_identity("hessian", plain)
    assert config_hash("hessian", {**plain, "k": 6}) != config_hash("hessian", plain)
    store = Store(tmp_path / "s.sqlite")
    store.write_result("a", 1, "m", _result(1.0, k=1))
    store.write_result("a", 1, "m", _result(2.0, k=1, max_batch_size=8))  # the same result: replaced
    assert len(store.results()) == 1 and store.scalars(keys=["loss"]).value.tolist() == [2.0]


def test_a_failing_write_leaves_nothing(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    bad = _result()
    bad.arrays["obj"] = np.array([object()], dtype=object)  # cannot be saved without pickle
    with pytest.raises(ValueError):
        store.write_result("a", 1, "metrics", bad)
    assert store.results().empty and store.scalars().empty


def test_partial_rows_resume_and_are_cleared_by_the_result(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    rows = store.partial("a", 3, "slices", "h")
    rows.save(0, {"loss": np.ones(4)})
    rows.save(2, {"loss": np.zeros(4)})
    reopened = Store(tmp_path / "s.sqlite").partial("a", 3, "slices", "h").load()
    assert sorted(reopened) == [0, 2] and np.array_equal(reopened[2]["loss"], np.zeros(4))
    store.write_result("a", 3, "slices", _result(), config="h")
    assert rows.load() == {}


def test_readonly_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "missing.sqlite", readonly=True)
    Store(tmp_path / "s.sqlite").write_result("a", 1, "p", _result())
    viewer = Store(tmp_path / "s.sqlite", readonly=True)
    assert len(viewer.scalars()) == 2
    with pytest.raises(StoreError, match="read-only"):
        viewer.write_result("a", 2, "p", _result())


def test_not_a_store(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER)")
    db.execute("INSERT INTO schema_version VALUES (99)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError):
        Store(tmp_path / "junk.sqlite")
    assert SCHEMA_VERSION == 2


def test_change_token_moves_on_every_write(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    first = store.change_token()
    store.write_result("a", 1, "p", _result())
    second = store.change_token()
    store.write_error("a", 2, "p", "boom")
    assert first != second != store.change_token()
    assert store.errors().message.tolist() == ["boom"]


def test_reader_sees_writes_from_another_connection_while_writing(tmp_path):
    writer = Store(tmp_path / "s.sqlite")
    reader = Store(tmp_path / "s.sqlite", readonly=True)

    def write():
        for step in range(20):
            writer.write_result("a", step, "p", _result(float(step)))

    thread = threading.Thread(target=write)
    thread.start()
    while thread.is_alive():
        reader.scalars()
    thread.join()
    assert len(reader.results()) == 20


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(tmp_path, fmt):
    pytest.importorskip("pyarrow") if fmt == "parquet" else None
    store = Store(tmp_path / "s.sqlite")
    store.write_result("run/1", 1, "p", _result())
    written = store.export(tmp_path / "out", fmt)
    names = sorted(p.name for p in written)
    assert f"scalars.{fmt}" in names and any(n.endswith(".npz") for n in names)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "out" / "scalars.csv") if fmt == "csv" else pd.read_parquet(
        tmp_path / "out" / "scalars.parquet")
    assert sorted(frame.key) == ["acc", "loss"]
    with pytest.raises(StoreError, match="csv' or 'parquet"):
        store.export(tmp_path / "x", "xlsx")


def _stored(store: Store) -> list[tuple]:
    """Every result as (run, step, probe, config, params hash, valid, message, scalars, arrays), in step order."""
    rows = []
    for row in store.results().sort_values("step").itertuples():
        scalars = store.scalars(run=row.run, probe=row.probe)
        mine = scalars[scalars.step == row.step]
        arrays = store.arrays(row.run, row.step, row.probe, row.config_hash)
        rows.append((row.run, row.step, row.probe, row.config_hash, row.config_json, row.params_hash, row.valid,
                     row.message, sorted(zip(mine.key, mine.value)),
                     sorted((k, a.tolist()) for k, a in arrays.items())))
    return rows


def test_write_results_stores_what_write_result_stores_one_by_one(tmp_path):
    items = [(step, _result(float(step))) for step in (3, 1, 2)]
    items[1][1].valid, items[1][1].message = False, "non-finite: loss"
    with Store(tmp_path / "one.sqlite") as one, Store(tmp_path / "many.sqlite") as many:
        for step, result in items:
            one.write_result("a", step, "metrics", result)
        ids = many.write_results("a", "metrics", items)
        assert len(ids) == 3 and len(set(ids)) == 3
        assert _stored(many) == _stored(one)
        assert len(_stored(many)) == 3


def test_write_results_keeps_the_later_of_one_identity_and_replaces_stored_ones(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.write_result("a", 1, "metrics", _result(9.0))
        store.write_results("a", "metrics", [(1, _result(1.0)), (2, _result(2.0)), (1, _result(3.0))])
        assert sorted(zip(store.scalars(keys=["loss"]).step, store.scalars(keys=["loss"]).value)) == [(1, 3.0), (2, 2.0)]
        assert len(store.results()) == 2


def test_write_results_is_all_or_nothing(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        broken = _result(2.0)
        broken.scalars["loss"] = "not a number"  # float() fails on the second result, after the first is in
        with pytest.raises(ValueError):
            store.write_results("a", "metrics", [(1, _result(1.0)), (2, broken)])
        assert store.results().empty
