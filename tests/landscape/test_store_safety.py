"""The store under adverse conditions: creation raced by readers and writers, foreign and older files,
read-only media, leases between processes, and kill -9 in the middle of writes."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import landscape.store_open as store_open
from landscape.leases import Claim, Leases
from landscape.store import SCHEMA_VERSION, Store, StoreError, config_hash
from probes.base import Result

ROOT = Path(__file__).resolve().parents[2]


def _result(value: float = 1.0, **params) -> Result:
    return Result(scalars={"loss": value}, arrays={"grid": np.full(3, value)}, params=params or {"k": 1})


def _tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


# -- creation is atomic ------------------------------------------------------------------------------------
def test_a_new_store_appears_with_its_whole_schema(tmp_path, monkeypatch):
    target = tmp_path / "new.sqlite"
    seen = []
    original = store_open._create_schema

    def watch(db):
        seen.append(target.exists())
        original(db)

    monkeypatch.setattr(store_open, "_create_schema", watch)
    Store(target).close()
    assert seen == [False]  # the schema was built before the file had its name
    assert {"results", "claims", "schema_version"} <= _tables(target)
    assert [p.name for p in tmp_path.iterdir()] == ["new.sqlite"]  # no temporary left behind


def test_a_creation_killed_half_way_leaves_nothing_in_the_way(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".s.sqlite.creating-{dead.pid}-0a1b"
    leftover.write_bytes(b"SQLite format 3\0")
    Store(tmp_path / "s.sqlite").close()
    assert [p.name for p in tmp_path.iterdir()] == ["s.sqlite"]


def test_readers_never_see_a_store_without_tables_while_stores_are_created(tmp_path):
    paths = [tmp_path / f"s{i}.sqlite" for i in range(15)]
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for path in paths:
                if path.exists():
                    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    try:
                        db.execute("SELECT COUNT(*) FROM results").fetchone()
                    except sqlite3.DatabaseError as error:
                        problems.append(f"{path.name}: {error}")
                    finally:
                        db.close()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for path in paths:
            Store(path).close()
    finally:
        done.set()
        reader.join()
    assert problems == []


def test_two_writers_creating_one_store_share_it(tmp_path):
    target = tmp_path / "shared.sqlite"
    stores, errors = [], []
    barrier = threading.Barrier(4)

    def create(i: int) -> None:
        barrier.wait()
        try:
            store = Store(target)
            store.write_result("r", i, "p", _result(float(i)))
            stores.append(store)
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store(target, readonly=True) as reader:
        assert sorted(reader.results().step) == [0, 1, 2, 3]
    db = sqlite3.connect(target)
    assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    db.close()
    for store in stores:
        store.close()


def test_an_empty_file_becomes_a_store(tmp_path):
    (tmp_path / "touched.sqlite").write_bytes(b"")
    with Store(tmp_path / "touched.sqlite") as store:
        store.write_result("r", 1, "p", _result())
    with Store(tmp_path / "touched.sqlite", readonly=True) as store:
        assert len(store.results()) == 1


# -- foreign and older files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ddl, tables", [
    (["CREATE TABLE users (id INTEGER)", "CREATE TABLE sessions (token TEXT)"], "sessions, users"),
    (["CREATE TABLE schema_version (version INTEGER)", "INSERT INTO schema_version VALUES (1)",
      "CREATE TABLE migrations (name TEXT)"], "migrations, schema_version"),
])
def test_a_foreign_database_is_refused_untouched(tmp_path, ddl, tables):
    path = tmp_path / "other_app.db"
    db = sqlite3.connect(path)
    for statement in ddl:
        db.execute(statement)
    db.commit()
    db.close()
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError, match=rf"another application \(tables: {tables}\)"):
            Store(path, readonly=readonly)
    assert path.read_bytes() == before
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    db.close()


V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (name TEXT PRIMARY KEY, created_at REAL NOT NULL, meta_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE checkpoints (run TEXT NOT NULL, step INTEGER NOT NULL, path TEXT, sha256 TEXT, PRIMARY KEY (run, step));
CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, step INTEGER NOT NULL,
    probe TEXT NOT NULL, config_hash TEXT NOT NULL, config_json TEXT NOT NULL, created_at REAL NOT NULL,
    valid INTEGER NOT NULL DEFAULT 1, message TEXT, UNIQUE (run, step, probe, config_hash));
CREATE TABLE scalars (result INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE, key TEXT NOT NULL,
    value REAL, PRIMARY KEY (result, key));
CREATE TABLE arrays (result INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE, key TEXT NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, npy BLOB NOT NULL, PRIMARY KEY (result, key));
CREATE TABLE partial_rows (run TEXT NOT NULL, step INTEGER NOT NULL, probe TEXT NOT NULL, config_hash TEXT NOT NULL,
    row INTEGER NOT NULL, key TEXT NOT NULL, npy BLOB NOT NULL, PRIMARY KEY (run, step, probe, config_hash, row, key));
CREATE TABLE errors (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, step INTEGER, probe TEXT NOT NULL,
    config_hash TEXT, message TEXT NOT NULL, created_at REAL NOT NULL);
INSERT INTO schema_version VALUES (1);
INSERT INTO runs VALUES ('old', 0, '{"lr": 0.1}');
INSERT INTO results (run, step, probe, config_hash, config_json, created_at) VALUES ('old', 5, 'metrics', 'abc', '{"gradient":true}', 1);
INSERT INTO scalars VALUES (1, 'train_loss', 0.25);
"""


def _v1_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()


def test_an_old_store_is_read_as_it_is_and_migrated_on_write_open(tmp_path):
    path = tmp_path / "old.sqlite"
    _v1_store(path)
    before = path.read_bytes()
    with Store(path, readonly=True) as reader:
        assert reader.version == 1
        frame = reader.results()
        assert frame.inputs_json.isna().all() and frame.params_hash.isna().all()
        assert reader.scalars().value.tolist() == [0.25]
    assert path.read_bytes() == before
    with Store(path) as writer:
        assert writer.version == SCHEMA_VERSION
        frame = writer.results()
        assert frame.params_hash.tolist() == [config_hash("metrics", {"gradient": True})]
        writer.write_result("old", 6, "metrics", _result(), inputs={"data": "d"}, checkpoint_sha256="x")
    with Store(path, readonly=True) as reader:
        assert reader.version == SCHEMA_VERSION and len(reader.results()) == 2
        assert reader.run_meta("old") == {"lr": 0.1}
    assert "claims" in _tables(path)


# -- read-only media ----------------------------------------------------------------------------------------------
@pytest.fixture()
def immutable_folder(tmp_path):
    """A folder whose entries cannot change (chattr +i): SQLite cannot create -wal/-shm files in it. Root
    ignores permission bits, not this attribute, so it is a real refusal by the kernel."""
    folder = tmp_path / "ro"
    folder.mkdir()

    def lock() -> None:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if done.returncode != 0 or store_open.folder_writable(folder) is None:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            pytest.skip(f"chattr +i is not available here ({done.stderr.strip() or 'folder still writable'}).")

    yield folder, lock
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_a_store_in_an_unwritable_folder_is_read_immutably_and_refused_for_writing(immutable_folder):
    folder, lock = immutable_folder
    path = folder / "s.sqlite"
    with Store(path) as store:
        store.write_result("r", 1, "p", _result(3.0))
    lock()
    with Store(path, readonly=True) as reader:
        assert reader.immutable and reader.scalars().value.tolist() == [3.0]
    with pytest.raises(StoreError, match=r"s\.sqlite is read-only \(its folder is read-only"):
        Store(path)
    with pytest.raises(StoreError, match=r"cannot create store .*new\.sqlite: folder .* is read-only"):
        Store(folder / "new.sqlite")
    with pytest.raises(StoreError, match=r"cannot create store .*: its folder .*deeper cannot be made"):
        Store(folder / "deeper" / "new.sqlite")
    assert sorted(p.name for p in folder.iterdir()) == ["s.sqlite"]


def test_read_only_media_simulated(tmp_path, monkeypatch):
    """Where the kernel cannot be asked (no chattr), the same path through a simulated read-only filesystem:
    the folder refuses new files with EROFS and SQLite cannot open the WAL store without them."""
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.write_result("r", 1, "p", _result(2.0))
    real_connect = store_open.connect

    def connect(target, *, uri):
        if uri and "immutable=1" not in target:
            db = real_connect(target, uri=uri)
            db.close()
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(target, uri=uri)

    monkeypatch.setattr(store_open, "connect", connect)
    monkeypatch.setattr(store_open, "folder_writable", lambda folder: OSError(errno.EROFS, "Read-only file system"))
    with Store(path, readonly=True) as reader:
        assert reader.immutable and reader.scalars().value.tolist() == [2.0]
    with pytest.raises(StoreError, match="is read-only .its folder is on a read-only filesystem"):
        Store(path)
    Path(f"{path}-wal").write_bytes(b"\0" * 64)  # writes not merged into the file: immutable would hide them
    with pytest.raises(StoreError, match="has writes not yet merged from s.sqlite-wal"):
        Store(path, readonly=True)


# -- leases ----------------------------------------------------------------------------------------------------
def test_leases_are_exclusive_expire_and_die_with_their_process(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    first, second = Leases(store, ttl=30), Leases(Store(tmp_path / "s.sqlite"), ttl=30)
    items = [("metrics", "h1"), ("hessian", "h2")]
    assert first.claim("r", 1, items, "sha") == {"metrics": Claim.MINE, "hessian": Claim.MINE}
    assert second.claim("r", 1, items, "sha") == {"metrics": Claim.BUSY, "hessian": Claim.BUSY}
    store.write_result("r", 1, "metrics", _result(), config="h1", checkpoint_sha256="sha")  # releases its lease
    assert second.claim("r", 1, items, "sha") == {"metrics": Claim.DONE, "hessian": Claim.BUSY}
    store.write_error("r", 1, "hessian", "boom", config="h2", owner=first.owner)  # so does an error
    assert second.claim("r", 1, [("hessian", "h2")], "sha") == {"hessian": Claim.MINE}
    assert first.claim("r", 1, [("hessian", "h2")], "sha") == {"hessian": Claim.BUSY}
    second.release_all()

    with store._transaction() as db:  # an expired lease of a live owner, and a live lease of a dead process
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        db.execute("INSERT INTO claims VALUES ('r', 2, 'metrics', 'h1', 'elsewhere/1/x', ?)", (time.time() - 1,))
        db.execute("INSERT INTO claims VALUES ('r', 2, 'hessian', 'h2', ?, ?)",
                   (f"{socket.gethostname()}/{dead.pid}/x", time.time() + 3600))
        db.execute("INSERT INTO claims VALUES ('r', 3, 'metrics', 'h1', 'elsewhere/1/x', ?)", (time.time() + 3600,))
    assert first.claim("r", 2, items, None) == {"metrics": Claim.MINE, "hessian": Claim.MINE}
    assert first.claim("r", 3, items[:1], None) == {"metrics": Claim.BUSY}


def test_the_heartbeat_keeps_a_lease_alive_and_releases_it_at_the_end(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    leases = Leases(store, ttl=0.3)
    with leases.heartbeat():
        leases.claim("r", 1, [("p", "h")], None)
        time.sleep(0.6)  # twice the lease: only the heartbeat keeps it
        assert Leases(Store(tmp_path / "s.sqlite")).claim("r", 1, [("p", "h")], None) == {"p": Claim.BUSY}
    assert store._query("SELECT COUNT(*) FROM claims")[0][0] == 0


# -- kill -9 while writing ----------------------------------------------------------------------------------------
WRITER = """
import sys
from types import SimpleNamespace
import numpy as np
from landscape.store import Store

store = Store(sys.argv[1])
step = int(sys.argv[2])
while True:
    step += 1
    store.write_result("r", step, "p", SimpleNamespace(params={"k": 1}, valid=True, message=None,
                       scalars={"a": 1.0, "step": float(step)}, arrays={"big": np.full(200_000, float(step))}))
"""


def test_kill_9_in_the_middle_of_writes_leaves_whole_results(tmp_path):
    path = tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(0)
    written = 0
    for _ in range(4):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(written * 1000)], env=env)
        time.sleep(rng.uniform(0.3, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
        with Store(path, readonly=True) as store:
            frame = store.scalars()
            results = store.results()
            for step in results.step:
                arrays = store.arrays("r", int(step), "p")
                assert np.array_equal(arrays["big"], np.full(200_000, float(step)))
        assert len(frame) == 2 * len(results)  # every result has both its scalars
        assert all(json.loads(text) == {"k": 1} for text in results.config_json)
        written = len(results) + 1
    assert written > 4, "the writer should have stored results between the kills"
