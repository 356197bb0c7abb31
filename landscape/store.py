"""The run store: one SQLite file holding every probe result of one or more runs.

Design:
* A result is identified by ``(run, step, probe, config_hash)``, the hash covering the probe's params,
  so the same probe with other params is a different result.
* One result is written in one transaction (scalars and arrays together): a crash never leaves half a
  result. WAL mode lets the dashboard read while a training callback writes.
* Long probes save finished rows (``partial_rows``) as they go so an interrupted grid resumes; the
  rows are deleted when the whole result is written.
* Arrays are stored as ``.npy`` bytes (no pickle), with dtype and shape beside them for inspection.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from landscape.probe import Result

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY, created_at REAL NOT NULL, meta_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS checkpoints (
    run TEXT NOT NULL, step INTEGER NOT NULL, path TEXT, sha256 TEXT, PRIMARY KEY (run, step));
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, step INTEGER NOT NULL, probe TEXT NOT NULL,
    config_hash TEXT NOT NULL, config_json TEXT NOT NULL, created_at REAL NOT NULL,
    valid INTEGER NOT NULL DEFAULT 1, message TEXT, UNIQUE (run, step, probe, config_hash));
CREATE INDEX IF NOT EXISTS results_by_probe ON results (probe, run, step);
CREATE TABLE IF NOT EXISTS scalars (
    result INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE, key TEXT NOT NULL, value REAL,
    PRIMARY KEY (result, key));
CREATE TABLE IF NOT EXISTS arrays (
    result INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE, key TEXT NOT NULL, dtype TEXT NOT NULL,
    shape TEXT NOT NULL, npy BLOB NOT NULL, PRIMARY KEY (result, key));
CREATE TABLE IF NOT EXISTS partial_rows (
    run TEXT NOT NULL, step INTEGER NOT NULL, probe TEXT NOT NULL, config_hash TEXT NOT NULL,
    row INTEGER NOT NULL, key TEXT NOT NULL, npy BLOB NOT NULL,
    PRIMARY KEY (run, step, probe, config_hash, row, key));
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, step INTEGER, probe TEXT NOT NULL,
    config_hash TEXT, message TEXT NOT NULL, created_at REAL NOT NULL);
"""


class StoreError(RuntimeError):
    """The store file cannot be opened or used as asked."""


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


def config_hash(probe: str, params: Mapping[str, Any]) -> str:
    """Short stable hash of a probe's name and params: the identity of a result beside run and step."""
    text = canonical_json({"probe": probe, "params": dict(params)})
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
    """Open (or create) a run store; ``readonly=True`` for viewers (the file must exist)."""

    def __init__(self, path: Path | str, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"store {self.path} does not exist.")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = self._connect(uri, uri=True)
        else:
            if self.path.exists() and not self.path.is_file():
                raise StoreError(f"store path {self.path} exists and is not a file.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect(str(self.path), uri=False)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
                if self._db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                    self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            except sqlite3.DatabaseError as error:
                self._db.close()
                raise StoreError(f"{self.path} is not a landscape store ({error}).") from None
        self._check_schema()

    def _connect(self, target: str, *, uri: bool) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(target, uri=uri, timeout=30.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            return db
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open store {self.path}: {error}.") from None

    def _check_schema(self) -> None:
        try:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is not a landscape store ({error}).") from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            found = None if row is None else row[0]
            raise StoreError(f"store {self.path} has schema version {found}; this version reads {SCHEMA_VERSION}.")

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
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only.")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

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
    def has_result(self, run: str, step: int, probe: str, config_hash: str) -> bool:
        return bool(self._query(
            "SELECT 1 FROM results WHERE run=? AND step=? AND probe=? AND config_hash=?",
            (run, int(step), probe, config_hash),
        ))

    def write_result(self, run: str, step: int, probe: str, result: Result, *, config: str | None = None) -> int:
        """Store one result atomically, replacing an earlier one with the same identity; returns its id."""
        params = dict(result.params)
        chash = config or config_hash(probe, params)
        now = time.time()
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM runs WHERE name=?", (run,)).fetchone():
                db.execute("INSERT INTO runs (name, created_at, meta_json) VALUES (?, ?, '{}')", (run, now))
            db.execute(
                "DELETE FROM results WHERE run=? AND step=? AND probe=? AND config_hash=?", (run, int(step), probe, chash)
            )
            cursor = db.execute(
                "INSERT INTO results (run, step, probe, config_hash, config_json, created_at, valid, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run, int(step), probe, chash, canonical_json(params), now, int(result.valid), result.message),
            )
            rid = int(cursor.lastrowid)
            db.executemany(
                "INSERT INTO scalars VALUES (?, ?, ?)", [(rid, k, float(v)) for k, v in result.scalars.items()]
            )
            db.executemany(
                "INSERT INTO arrays VALUES (?, ?, ?, ?, ?)",
                [(rid, k, str(a.dtype), json.dumps(list(a.shape)), encode_array(a)) for k, a in result.arrays.items()],
            )
            db.execute(
                "DELETE FROM partial_rows WHERE run=? AND step=? AND probe=? AND config_hash=?",
                (run, int(step), probe, chash),
            )
        return rid

    def write_error(self, run: str, step: int | None, probe: str, message: str, *, config: str | None = None) -> None:
        """Record that a probe failed at a step (shown by ``landscape ls`` and the dashboard)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO errors (run, step, probe, config_hash, message, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run, step, probe, config, message, time.time()),
            )

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
        """One row per stored result: id, run, step, probe, config_hash, config_json, created_at, valid, message."""
        where, args = self._filters(run, probe)
        columns = ["id", "run", "step", "probe", "config_hash", "config_json", "created_at", "valid", "message"]
        return self._frame(
            f"SELECT {', '.join('r.' + c for c in columns)} FROM results r{where} ORDER BY r.run, r.step, r.probe",
            args, columns,
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
        for rid, run, step, probe, chash in self._query("SELECT id, run, step, probe, config_hash FROM results"):
            arrays = {k: decode_array(b) for k, b in self._query("SELECT key, npy FROM arrays WHERE result=?", (rid,))}
            if arrays:
                array_dir.mkdir(exist_ok=True)
                target = array_dir / f"{_safe(run)}__step{int(step)}__{probe}__{chash}.npz"
                np.savez_compressed(target, **arrays)
                written.append(target)
        return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
