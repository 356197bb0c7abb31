"""The run store: one SQLite file holding every probe result of one or more runs.

Design:
* A result is identified by ``(run, step, probe, config_hash)``, the hash covering the probe's params, its
  code version and what it was computed from (data, loss, model factory: ``landscape.identity``); the
  checkpoint file's SHA-256 is stored beside it and must match too. ``inputs_json`` records those inputs.
* One result is written in one transaction (scalars and arrays together): a crash never leaves half a
  result. WAL mode lets the dashboard read while a training callback writes. ``Store.batch()`` groups
  many writes into one commit (each still all or nothing, as a savepoint), for a background writer.
* Long probes save finished rows (``partial_rows``) as they go so an interrupted grid resumes; the
  rows are deleted when the whole result is written.
* ``claims`` holds the leases of results being computed (``landscape.leases``); writing a result releases
  its lease in the same transaction.
* Arrays are stored as ``.npy`` bytes (no pickle), with dtype and shape beside them for inspection.
* Opening (creation, migration, foreign files, read-only media) is ``landscape.store_open``'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from landscape.probe import Result

from landscape.store_open import SCHEMA_VERSION, StoreError, open_readonly, open_writable

__all__ = ["SCHEMA_VERSION", "PartialRowStore", "Store", "StoreError", "canonical_json", "config_hash"]

RESULT_COLUMNS = ["id", "run", "step", "probe", "config_hash", "config_json", "created_at", "valid", "message",
                  "params_hash", "inputs_json", "checkpoint_sha256"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def canonical_json(params: Mapping[str, Any]) -> str:
    """Params as canonical JSON (sorted keys, numpy scalars unwrapped, other objects by repr)."""
    return json.dumps(_jsonable(params), sort_keys=True, separators=(",", ":"))


# Params that change how a result is computed, not what it is (products on smaller parts of each batch):
# stored with the result, left out of its identity, so setting one neither recomputes nor duplicates it.
NOT_HASHED = frozenset({"max_batch_size"})


def hashed_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the names in :data:`NOT_HASHED`."""
    return {key: value for key, value in params.items() if key not in NOT_HASHED}


def config_hash(probe: str, params: Mapping[str, Any]) -> str:
    """Short stable hash of a probe's name and params (less :data:`NOT_HASHED`): the identity of a result
    beside run and step."""
    text = canonical_json({"probe": probe, "params": hashed_params(params)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


class PartialRowStore:
    """Finished rows of one in-progress result (implements ``landscape.probe.PartialRows``)."""

    def __init__(self, store: Store, run: str, step: int, probe: str, config_hash: str) -> None:
        self._store = store
        self._key = (run, int(step), probe, config_hash)

    def load(self) -> dict[int, dict[str, np.ndarray]]:
        rows: dict[int, dict[str, np.ndarray]] = {}
        for row, key, blob in self._store._query(
            "SELECT row, key, npy FROM partial_rows WHERE run=? AND step=? AND probe=? AND config_hash=?",
            self._key,
        ):
            rows.setdefault(int(row), {})[key] = decode_array(blob)
        return rows

    def save(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        with self._store._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO partial_rows VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*self._key, int(index), key, encode_array(np.asarray(a))) for key, a in arrays.items()],
            )


class Store:
    """Open (or create) a run store; ``readonly=True`` for viewers (the file must exist).

    A read-only store opens on read-only media too (``immutable`` is then True: nothing can change it).
    A store of an older schema is read as it is, and migrated when opened for writing.
    """

    def __init__(self, path: Path | str, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.immutable = False
        self._lock = threading.RLock()
        self._batched = False  # a batch() transaction is open (by the thread holding the lock)
        if readonly:
            self._db, self.version, self.immutable = open_readonly(self.path)
        else:
            self._db, self.version = open_writable(self.path), SCHEMA_VERSION
        self._columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}

    def _column(self, name: str, prefix: str = "") -> str:
        """``prefix+name``, or NULL under that name for a store of an older schema that lacks the column."""
        return f"{prefix}{name}" if name in self._columns else f"NULL AS {name}"

    # -- plumbing -----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write, all or nothing: its own transaction, or a savepoint inside an open :meth:`batch`
        (so a failing write leaves the batch's other writes in place)."""
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only.")
        with self._lock:
            if self._batched:
                self._db.execute("SAVEPOINT one_write")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled the whole batch back itself
                        self._db.execute("ROLLBACK TO one_write")
                        self._db.execute("RELEASE one_write")
                    raise
                else:
                    self._db.execute("RELEASE one_write")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def atomic(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A group of writes that is all or nothing: its own transaction, or inside :meth:`batch` a
        savepoint (writes such as :meth:`write_result` nest inside it there)."""
        return self._transaction()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit every write made inside in one transaction (one commit for many records: a background
        writer's batches). Each write stays atomic on its own; an exception out of the block rolls them
        all back. The store's lock is held throughout, so other threads wait for the commit."""
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only.")
        with self._lock:
            if self._batched:  # nested: part of the batch already open
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._batched = True
            try:
                yield
            except BaseException:
                self._batched = False
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._batched = False
            if self._db.in_transaction:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise

    # -- runs and checkpoints -----------------------------------------------------------------------
    def add_run(self, run: str, meta: Mapping[str, Any] | None = None) -> None:
        """Register a run (idempotent); ``meta`` (JSON-able) is merged into what is stored."""
        existing = self.run_meta(run) if run in self.runs() else {}
        merged = {**existing, **_jsonable(dict(meta or {}))}
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (name, created_at, meta_json) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET meta_json=excluded.meta_json",
                (run, time.time(), json.dumps(merged, sort_keys=True)),
            )

    def runs(self) -> list[str]:
        """Run names, oldest first (runs named only by results are included)."""
        names = [r[0] for r in self._query("SELECT name FROM runs ORDER BY created_at, name")]
        extra = [r[0] for r in self._query("SELECT DISTINCT run FROM results ORDER BY run") if r[0] not in names]
        return names + extra

    def run_meta(self, run: str) -> dict[str, Any]:
        row = self._query("SELECT meta_json FROM runs WHERE name=?", (run,))
        return json.loads(row[0][0]) if row else {}

    def add_checkpoint(self, run: str, step: int, path: Path | str | None = None, sha256: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                (run, int(step), None if path is None else str(path), sha256),
            )

    def checkpoints(self, run: str) -> list[tuple[int, str | None, str | None]]:
        return [tuple(r) for r in self._query("SELECT step, path, sha256 FROM checkpoints WHERE run=? ORDER BY step", (run,))]

    def steps(self, run: str, probe: str | None = None) -> list[int]:
        """Steps that have results (of ``probe``, if given), ascending."""
        sql = "SELECT DISTINCT step FROM results WHERE run=?" + (" AND probe=?" if probe else "") + " ORDER BY step"
        return [int(r[0]) for r in self._query(sql, (run, probe) if probe else (run,))]

    # -- results ------------------------------------------------------------------------------------
    def has_result(self, run: str, step: int, probe: str, config_hash: str,
                   checkpoint_sha256: str | None = None, since: float | None = None) -> bool:
        """Whether that result is stored (with ``checkpoint_sha256``: computed on that checkpoint file; with
        ``since``: written at or after that time)."""
        sql = "SELECT 1 FROM results WHERE run=? AND step=? AND probe=? AND config_hash=?"
        args: tuple = (run, int(step), probe, config_hash)
        if checkpoint_sha256 is not None:
            if "checkpoint_sha256" not in self._columns:
                return False
            sql += " AND checkpoint_sha256=?"
            args += (checkpoint_sha256,)
        if since is not None:
            sql += " AND created_at >= ?"
            args += (float(since),)
        return bool(self._query(sql, args))

    def results_like(self, run: str, step: int, probe: str, params_hash: str) -> list[dict[str, Any]]:
        """The results of ``probe`` at ``step`` with the same params, whatever they were computed from, newest
        first: each one's id, config hash, inputs (a dict, or None when not recorded) and checkpoint SHA-256."""
        if "params_hash" not in self._columns:
            return []
        rows = self._query(
            "SELECT id, config_hash, inputs_json, checkpoint_sha256 FROM results WHERE run=? AND step=? AND probe=? "
            "AND params_hash=? ORDER BY id DESC", (run, int(step), probe, params_hash))
        return [{"id": int(rid), "config_hash": chash, "inputs": json.loads(inputs) if inputs else None,
                 "checkpoint_sha256": sha} for rid, chash, inputs, sha in rows]

    def write_result(self, run: str, step: int, probe: str, result: Result, *, config: str | None = None,
                     params_hash: str | None = None, inputs: Mapping[str, Any] | None = None,
                     checkpoint_sha256: str | None = None) -> int:
        """Store one result atomically, replacing an earlier one with the same identity, and release its
        lease; returns its id. ``inputs`` records what it was computed from (``landscape.identity``)."""
        inputs_json = None if inputs is None else canonical_json(inputs)
        with self._transaction() as db:
            return self._insert_results(db, run, probe, [(step, result)], config, params_hash, inputs_json,
                                        checkpoint_sha256)[0]

    def write_results(self, run: str, probe: str, results: Sequence[tuple[int, Result]], *,
                      config: str | None = None, params_hash: str | None = None) -> list[int]:
        """Store many ``(step, result)`` of one probe together, all or nothing, as :meth:`write_result` would
        one by one (a later result of the same identity replaces an earlier one); returns their ids.

        A training callback's records arrive by the dozen: one call costs a few statements per result
        instead of nine, which keeps the writer thread's share of the interpreter small."""
        with self._transaction() as db:
            return self._insert_results(db, run, probe, results, config, params_hash, None, None)

    @staticmethod
    def _insert_results(db: sqlite3.Connection, run: str, probe: str, results: Sequence[tuple[int, Result]],
                        config: str | None, params_hash: str | None, inputs_json: str | None,
                        checkpoint_sha256: str | None) -> list[int]:
        now = time.time()
        if not db.execute("SELECT 1 FROM runs WHERE name=?", (run,)).fetchone():
            db.execute("INSERT INTO runs (name, created_at, meta_json) VALUES (?, ?, '{}')", (run, now))
        texts: dict[int, tuple[str, str, str]] = {}  # by params object: results of one config share theirs
        latest: dict[tuple[str, int, str, str], tuple[Result, tuple[str, str, str]]] = {}
        for step, result in results:
            text = texts.get(id(result.params))
            if text is None:
                params = dict(result.params)
                hashed = "" if config and params_hash else config_hash(probe, params)
                text = texts[id(result.params)] = (canonical_json(params), config or hashed, params_hash or hashed)
            key = (run, int(step), probe, text[1])
            latest.pop(key, None)  # the later of two results with one identity wins, as written one by one
            latest[key] = (result, text)
        keys = list(latest)
        db.executemany("DELETE FROM results WHERE run=? AND step=? AND probe=? AND config_hash=?", keys)
        ids, scalars, arrays = [], [], []
        for key, (result, (params_json, _, phash)) in latest.items():
            cursor = db.execute(
                "INSERT INTO results (run, step, probe, config_hash, config_json, created_at, valid, message, "
                "params_hash, inputs_json, checkpoint_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, params_json, now, int(result.valid), result.message, phash, inputs_json, checkpoint_sha256),
            )
            rid = int(cursor.lastrowid)
            ids.append(rid)
            scalars.extend((rid, k, float(v)) for k, v in result.scalars.items())
            arrays.extend((rid, k, str(a.dtype), json.dumps(list(a.shape)), encode_array(a))
                          for k, a in result.arrays.items())
        db.executemany("INSERT INTO scalars VALUES (?, ?, ?)", scalars)
        if arrays:
            db.executemany("INSERT INTO arrays VALUES (?, ?, ?, ?, ?)", arrays)
        db.executemany("DELETE FROM partial_rows WHERE run=? AND step=? AND probe=? AND config_hash=?", keys)
        db.executemany("DELETE FROM claims WHERE run=? AND step=? AND probe=? AND config_hash=?", keys)
        return ids

    def write_error(self, run: str, step: int | None, probe: str, message: str, *, config: str | None = None,
                    owner: str | None = None) -> None:
        """Record that a probe failed at a step (shown by ``landscape ls`` and the dashboard); with ``owner``,
        release that owner's lease on the result in the same transaction."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO errors (run, step, probe, config_hash, message, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run, step, probe, config, message, time.time()),
            )
            if owner is not None and config is not None:
                db.execute("DELETE FROM claims WHERE run=? AND step=? AND probe=? AND config_hash=? AND owner=?",
                           (run, step, probe, config, owner))

    def partial(self, run: str, step: int, probe: str, config_hash: str) -> PartialRowStore:
        """Row storage for an in-progress result (see ``landscape.probe.PartialRows``)."""
        return PartialRowStore(self, run, step, probe, config_hash)

    def set_synchronous(self, level: str) -> None:
        """How long this connection's commits wait for the disk: ``"FULL"`` (SQLite's default, a sync per
        commit) or ``"NORMAL"`` (in WAL mode a committed record still survives a crash of the process; only
        an OS crash or power loss may drop the latest ones). NORMAL makes frequent small writes, such as a
        training callback's, several times cheaper."""
        mode = str(level).upper()
        if mode not in ("FULL", "NORMAL"):
            raise StoreError(f"synchronous level must be 'FULL' or 'NORMAL', got {level!r}.")
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={mode}")

    def change_token(self) -> tuple[int, int, int]:
        """A cheap value that changes whenever a result or error is added (for live polling)."""
        rid, count = self._query("SELECT COALESCE(MAX(id), 0), COUNT(*) FROM results")[0]
        errors = self._query("SELECT COALESCE(MAX(id), 0) FROM errors")[0][0]
        return int(rid), int(count), int(errors)

    # -- reading as tables --------------------------------------------------------------------------
    def _frame(self, sql: str, args: tuple, columns: list[str]) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self._query(sql, args), columns=columns)

    @staticmethod
    def _filters(run: str | None, probe: str | None, prefix: str = "r.") -> tuple[str, tuple]:
        clauses, args = [], []
        if run is not None:
            clauses.append(f"{prefix}run=?")
            args.append(run)
        if probe is not None:
            clauses.append(f"{prefix}probe=?")
            args.append(probe)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)

    def results(self, run: str | None = None, probe: str | None = None) -> pd.DataFrame:
        """One row per stored result: id, run, step, probe, config_hash, config_json, created_at, valid, message,
        params_hash, inputs_json (what it was computed from) and checkpoint_sha256 (None in older stores)."""
        where, args = self._filters(run, probe)
        selected = ", ".join(self._column(c, "r.") for c in RESULT_COLUMNS)
        return self._frame(
            f"SELECT {selected} FROM results r{where} ORDER BY r.run, r.step, r.probe", args, list(RESULT_COLUMNS),
        )

    def scalars(self, run: str | None = None, probe: str | None = None, keys: list[str] | None = None) -> pd.DataFrame:
        """Long table of scalars: columns run, step, probe, key, value, config_hash, valid."""
        where, args = self._filters(run, probe)
        if keys:
            where += (" AND " if where else " WHERE ") + f"s.key IN ({', '.join('?' * len(keys))})"
            args = args + tuple(keys)
        return self._frame(
            "SELECT r.run, r.step, r.probe, s.key, s.value, r.config_hash, r.valid FROM scalars s "
            f"JOIN results r ON r.id = s.result{where} ORDER BY r.run, r.step, r.probe, s.key",
            args, ["run", "step", "probe", "key", "value", "config_hash", "valid"],
        )

    def arrays(self, run: str, step: int, probe: str, config_hash: str | None = None,
               keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays of one result (the newest one of that probe at that step unless ``config_hash``)."""
        sql = "SELECT id FROM results WHERE run=? AND step=? AND probe=?"
        args: tuple = (run, int(step), probe)
        if config_hash is not None:
            sql += " AND config_hash=?"
            args += (config_hash,)
        rows = self._query(sql + " ORDER BY created_at DESC, id DESC LIMIT 1", args)
        if not rows:
            return {}
        sql = "SELECT key, npy FROM arrays WHERE result=?"
        args = (rows[0][0],)
        if keys:
            sql += f" AND key IN ({', '.join('?' * len(keys))})"
            args += tuple(keys)
        return {key: decode_array(blob) for key, blob in self._query(sql, args)}

    def errors(self, run: str | None = None) -> pd.DataFrame:
        where, args = self._filters(run, None, prefix="")
        return self._frame(
            f"SELECT run, step, probe, message, created_at FROM errors{where} ORDER BY id", args,
            ["run", "step", "probe", "message", "created_at"],
        )

    def to_pandas(self) -> pd.DataFrame:
        """Every scalar of every result as one long DataFrame (see :meth:`scalars`)."""
        return self.scalars()

    def export(self, folder: Path | str, fmt: str = "csv") -> list[Path]:
        """Write scalars, results and errors as CSV or Parquet tables, and each result's arrays as ``.npz``."""
        if fmt not in ("csv", "parquet"):
            raise StoreError(f"export format must be 'csv' or 'parquet', got {fmt!r}.")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name, frame in (("scalars", self.scalars()), ("results", self.results()), ("errors", self.errors())):
            target = out / f"{name}.{fmt}"
            if fmt == "csv":
                frame.to_csv(target, index=False)
            else:
                frame.to_parquet(target, index=False)
            written.append(target)
        array_dir = out / "arrays"
        used: set[str] = set()
        for rid, run, step, probe, chash in self._query(
                "SELECT id, run, step, probe, config_hash FROM results ORDER BY id"):
            arrays = {k: decode_array(b) for k, b in self._query("SELECT key, npy FROM arrays WHERE result=?", (rid,))}
            if arrays:
                array_dir.mkdir(exist_ok=True)
                name = f"{_safe(run)}__step{int(step)}__{_safe(probe)}__{_safe(chash)}"
                if len(name) > 200 or name.lower() in used:  # long or clashing after sanitizing: add the id
                    name = f"{name[:180]}__id{int(rid)}"
                used.add(name.lower())
                target = array_dir / f"{name}.npz"
                np.savez_compressed(target, **arrays)
                written.append(target)
        return written


def _safe(name: str) -> str:
    """A file-name-safe form of a run or probe name: ASCII letters, digits and ``-_.`` kept, anything else
    (path separators included) replaced by ``_``, never starting with a dot."""
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in str(name))
    return "_" + safe if not safe or safe.startswith(".") else safe
