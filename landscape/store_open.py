"""Opening a store file safely: its schema, atomic creation, migration, foreign files, read-only media.

* A new store is built under a temporary name in the same folder and linked into place only once its
  schema is committed, so a reader never sees a store file without tables.
* An existing SQLite file that is not a landscape store (tables of another application) is refused,
  naming its tables, before anything is written to it (no tables added, journal mode untouched).
* A store of an older schema is migrated in place, in one transaction, when it is opened for writing;
  opened read-only it is read as it is.
* Read-only opens use ``mode=ro``; where the folder cannot hold SQLite's ``-wal``/``-shm`` files (a
  read-only filesystem), ``immutable=1`` — refused when an unmerged ``-wal`` file would then be ignored,
  since that would show stale numbers.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sqlite3
import tempfile
from pathlib import Path

SCHEMA_VERSION = 2

#: One statement each, run in one transaction (a reader sees all the tables or none).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (name TEXT PRIMARY KEY, created_at REAL NOT NULL, "
    "meta_json TEXT NOT NULL DEFAULT '{}')",
    "CREATE TABLE IF NOT EXISTS checkpoints (run TEXT NOT NULL, step INTEGER NOT NULL, path TEXT, sha256 TEXT, "
    "PRIMARY KEY (run, step))",
    "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, "
    "step INTEGER NOT NULL, probe TEXT NOT NULL, config_hash TEXT NOT NULL, config_json TEXT NOT NULL, "
    "created_at REAL NOT NULL, valid INTEGER NOT NULL DEFAULT 1, message TEXT, params_hash TEXT, "
    "inputs_json TEXT, checkpoint_sha256 TEXT, UNIQUE (run, step, probe, config_hash))",
    "CREATE INDEX IF NOT EXISTS results_by_probe ON results (probe, run, step)",
    "CREATE TABLE IF NOT EXISTS scalars (result INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE, "
    "key TEXT NOT NULL, value REAL, PRIMARY KEY (result, key))",
    "CREATE TABLE IF NOT EXISTS arrays (result INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE, "
    "key TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, npy BLOB NOT NULL, PRIMARY KEY (result, key))",
    "CREATE TABLE IF NOT EXISTS partial_rows (run TEXT NOT NULL, step INTEGER NOT NULL, probe TEXT NOT NULL, "
    "config_hash TEXT NOT NULL, row INTEGER NOT NULL, key TEXT NOT NULL, npy BLOB NOT NULL, "
    "PRIMARY KEY (run, step, probe, config_hash, row, key))",
    "CREATE TABLE IF NOT EXISTS errors (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, step INTEGER, "
    "probe TEXT NOT NULL, config_hash TEXT, message TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS claims (run TEXT NOT NULL, step INTEGER NOT NULL, probe TEXT NOT NULL, "
    "config_hash TEXT NOT NULL, owner TEXT NOT NULL, expires_at REAL NOT NULL, "
    "PRIMARY KEY (run, step, probe, config_hash))",
)
#: Tables a landscape store may hold (any version), plus SQLite's own.
OUR_TABLES = frozenset({"schema_version", "runs", "checkpoints", "results", "scalars", "arrays", "partial_rows",
                        "errors", "claims", "sqlite_sequence"})
#: Columns added to ``results`` by schema version 2.
V2_RESULT_COLUMNS = (("params_hash", "TEXT"), ("inputs_json", "TEXT"), ("checkpoint_sha256", "TEXT"))


class StoreError(RuntimeError):
    """The store file cannot be opened or used as asked."""


def connect(target: str, *, uri: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), foreign keys on, 30 s busy timeout."""
    db = sqlite3.connect(target, uri=uri, timeout=30.0, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _version(db: sqlite3.Connection) -> int | None:
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return None if row is None else int(row[0])


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_is_store(path: Path, found: set[str], db: sqlite3.Connection) -> int:
    """The schema version of a store's tables ``found``; a foreign or newer file is a :class:`StoreError`."""
    if not found:
        raise StoreError(f"{path} is not a landscape store (an SQLite file without tables).")
    if "schema_version" in found:
        version = _version(db)
        if version is None or version > SCHEMA_VERSION or version < 1:
            raise StoreError(f"store {path} has schema version {version}; this version reads 1 to {SCHEMA_VERSION}.")
        if "results" in found:
            return version
    foreign = sorted(name for name in found if not name.startswith("sqlite_"))
    raise StoreError(
        f"{path} is an SQLite database of another application (tables: {', '.join(foreign)}), not a landscape "
        "store; refusing to add tables to it. Pass a new file name with --store."
    )


def _create_schema(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            db.execute(statement)
        if db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a version-1 store to version 2 in one transaction (re-checked inside it: another writer may
    have migrated it meanwhile). Old results get their params hash; their inputs stay unknown."""
    from landscape.store import config_hash

    db.execute("BEGIN IMMEDIATE")
    try:
        if _version(db) == 1:
            present = {row[1] for row in db.execute("PRAGMA table_info(results)")}
            for name, kind in V2_RESULT_COLUMNS:
                if name not in present:
                    db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
            for statement in SCHEMA:
                db.execute(statement)
            rows = db.execute("SELECT id, probe, config_json FROM results").fetchall()
            db.executemany("UPDATE results SET params_hash=? WHERE id=?",
                           [(config_hash(probe, json.loads(text)), rid) for rid, probe, text in rows])
            db.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _os_reason(error: OSError) -> str:
    """Why a folder cannot be written, as the end of a sentence about it."""
    if error.errno == errno.EROFS:
        return "is on a read-only filesystem"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "is read-only (not writable)"
    return f"cannot be written ({error.strerror or error})"


def folder_writable(folder: Path) -> OSError | None:
    """None when a file can be created in ``folder`` (tried for real: root ignores permission bits but
    not a read-only mount or an immutable folder); else the error."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".landscape-write-test-")
    except OSError as error:
        return error
    os.close(handle)
    os.unlink(name)
    return None


def _remove_abandoned(folder: Path, name: str) -> None:
    """Delete temporary files that a process killed while creating this store left behind."""
    for leftover in folder.glob(f".{name}.creating-*"):
        pid = leftover.name[len(f".{name}.creating-"):].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except OSError:
            pass


def _create_new(path: Path) -> None:
    """Create the store at ``path`` atomically: schema committed under a temporary name, then hard-linked
    into place (never replacing a store another process created meanwhile)."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create store {path}: its folder {folder} cannot be made "
                         f"(the nearest existing folder {_existing(folder)} {_os_reason(error)}).") from None
    _remove_abandoned(folder, path.name)
    temporary = folder / f".{path.name}.creating-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        db = connect(str(temporary), uri=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            _create_schema(db)
        finally:
            db.close()
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: open theirs
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if not path.exists():  # a filesystem without hard links: rename, which is atomic too
                os.replace(temporary, path)
    except OSError as error:
        raise StoreError(f"cannot create store {path}: folder {folder} {_os_reason(error)}.") from None
    except sqlite3.Error as error:
        blocked = folder_writable(folder)
        if blocked is not None:
            raise StoreError(f"cannot create store {path}: folder {folder} {_os_reason(blocked)}.") from None
        raise StoreError(f"cannot create store {path} ({error}).") from None
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)


def _read_only(path: Path, reason: str) -> StoreError:
    return StoreError(f"store {path} is read-only ({reason}): it can be read (landscape ls, export, dashboard) "
                      "but not written; copy it to a writable folder to add results.")


def _check_writable(path: Path) -> None:
    """A store is written with SQLite's -wal and -shm files beside it: its folder must take new files."""
    blocked = folder_writable(path.parent)
    if blocked is not None:
        raise _read_only(path, f"its folder {_os_reason(blocked)}")
    try:
        with open(path, "r+b"):
            pass
    except OSError as error:
        raise _read_only(path, f"the file {_os_reason(error)}") from None


def open_writable(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a store for writing; refuse foreign files; migrate old schemas; WAL mode."""
    if path.exists() and not path.is_file():
        raise StoreError(f"store path {path} exists and is not a file.")
    if not path.exists():
        _create_new(path)
    else:
        _check_writable(path)
    try:
        db = connect(str(path), uri=False)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open store {path} ({error}).") from None
    try:
        found = tables(db)
        if not found:  # an empty file (e.g. created by touch): build the schema in place, in one transaction
            _create_schema(db)
            found = tables(db)
        version = check_is_store(path, found, db)
        if version < SCHEMA_VERSION:
            _migrate(db)
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")
    except StoreError:
        db.close()
        raise
    except sqlite3.DatabaseError as error:
        db.close()
        blocked = folder_writable(path.parent)
        if blocked is not None or "readonly" in str(error):
            reason = f"its folder {_os_reason(blocked)}" if blocked is not None else "the file is read-only"
            raise _read_only(path, reason) from None
        raise StoreError(f"{path} is not a landscape store ({error}).") from None
    return db


def open_readonly(path: Path) -> tuple[sqlite3.Connection, int, bool]:
    """Open a store read-only: (connection, schema version, immutable)."""
    if not path.is_file():
        raise StoreError(f"store {path} does not exist.")
    uri = path.resolve().as_uri()
    try:
        db = connect(f"{uri}?mode=ro", uri=True)
        found = tables(db)
        immutable = False
    except sqlite3.DatabaseError as error:
        blocked = folder_writable(path.parent)
        if blocked is None or "not a database" in str(error):
            raise StoreError(f"{path} is not a landscape store ({error}).") from None
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"store {path} is read-only (its folder {_os_reason(blocked)}) and has writes not yet merged from {wal.name}, "
                "which SQLite cannot read there; copy the store with its -wal file to a writable folder to read it."
            ) from None
        try:
            db = connect(f"{uri}?mode=ro&immutable=1", uri=True)
            found = tables(db)
        except sqlite3.DatabaseError as again:
            raise StoreError(f"{path} is not a landscape store ({again}; opened read-only as its folder "
                             f"{_os_reason(blocked)}).") from None
        immutable = True
    try:
        version = check_is_store(path, found, db)
    except (StoreError, sqlite3.DatabaseError) as error:
        db.close()
        if isinstance(error, StoreError):
            raise
        raise StoreError(f"{path} is not a landscape store ({error}).") from None
    return db, version, immutable
