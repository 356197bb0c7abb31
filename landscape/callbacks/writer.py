"""The monitor's background store writer: records are committed off the training thread, many per commit.

The training thread hands each record (a result, an error, run metadata) to :meth:`StoreWriter.put`, which
only appends it to a bounded queue (no lock, no thread woken); a daemon thread wakes every ``linger``
seconds, takes what has gathered and writes it inside one ``Store.batch()`` transaction (each record
still all or nothing, as a savepoint). Waking on its own timer rather than at each put keeps the thread
switch out of the training step; an idle writer costs one wake-up per ``linger``.

* Nothing is dropped: when the queue is full, :meth:`put` blocks until the writer has taken records off it
  (the training thread waits for a commit, it never loses a record); :attr:`WriterStats.waits` counts it.
* Everything queued is committed by :meth:`flush`, by :meth:`close` and at interpreter exit (``atexit``);
  only a crash of the process (or ``os._exit``) loses the records not yet committed — the writer commits
  whatever has gathered after at most ``linger`` seconds.
* A failing write (disk full, database locked past its timeout) never reaches the training thread: the
  record is kept aside and reported (``could not write … at step N (…); training continues without it.``)
  to ``warn`` by :meth:`report`, which the owner calls from its own thread (so warnings keep their usual
  filters and place).
* Threads: the store's connection is opened with ``check_same_thread=False`` and every use of it holds the
  store's lock (``landscape.store``), so the writer thread and the training thread share it safely; a
  batch holds the lock only while it commits.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from landscape.store import Store

__all__ = ["Record", "StoreWriter", "WriterStats", "writes_here"]

#: What a failing write raises: the store's errors and the file system's.
WRITE_ERRORS = (sqlite3.Error, OSError)


def writes_here() -> bool:
    """False on the ranks other than 0 of an initialized ``torch.distributed`` process group: only rank 0
    writes the store (and feeds the sinks); every other process, and any process outside a group, writes."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@dataclass(frozen=True)
class Record:
    """One write: ``what`` names it in a failure message (``"the monitor scalars"``), ``write`` does it.

    ``atomic``: the write is one store call that is all or nothing by itself (``Store.write_result``),
    so the writer does not wrap it in a savepoint of its own.

    ``together``: records that arrive one after another with the same ``together`` function are written by
    one call ``together(store, [their items])`` (functions compared with ``==``, so one object's bound
    method matches itself), all or nothing (``Store.write_results``: a few statements
    per record instead of nine); should that call fail, each is written again alone by its ``write``.
    """

    what: str
    step: int | None
    write: Callable[[Store], object]
    atomic: bool = False
    together: Callable[[Store, list[Any]], object] | None = None
    item: Any = None


@dataclass
class WriterStats:
    """Counts kept by the writer thread (read them after :meth:`StoreWriter.flush`)."""

    written: int = 0  # records committed
    failed: int = 0  # records whose write raised
    commits: int = 0  # transactions committed
    waits: int = 0  # puts that found the queue full and waited


class _Marker:
    """Put in the queue by :meth:`StoreWriter.flush`/`close`: set once everything before it is committed."""

    def __init__(self, stop: bool = False) -> None:
        self.done = threading.Event()
        self.stop = stop


class StoreWriter:
    """Write records to ``store`` from a daemon thread, in batched commits.

    ``max_pending``: the queue bound (records waiting); ``max_batch``: the most records per commit;
    ``linger``: how long the writer waits for more records after the first of a batch (seconds; 0 commits
    at once). ``warn(key, message)`` receives each failure from :meth:`report`.
    """

    def __init__(self, store: Store, warn: Callable[[str, str], None], *, max_pending: int = 1024,
                 max_batch: int = 256, linger: float = 0.05) -> None:
        self.check_options(max_pending, linger, max_batch)
        self.store = store
        self.stats = WriterStats()
        self._warn = warn
        # A deque, not a queue.Queue: an append takes no lock and wakes no thread. The writer wakes every
        # ``linger`` seconds on its own (so a wake-up never lands inside the training thread's step), or
        # at once (``_hurry``) for a flush, a close or a full queue; ``_room`` lets a put that found the
        # queue full wait for the next commit. With ``linger=0`` every put wakes it.
        self._pending: deque[Record | _Marker] = deque()
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._linger = float(linger)
        self._hurry = threading.Event()
        self._room = threading.Condition()
        self._failures: deque[tuple[str, str]] = deque()
        self._closed = False
        #: Called at interpreter exit before what is queued is committed (the owner's records still pending).
        self.before_exit: Callable[[], None] | None = None
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="landscape-store-writer", daemon=True)
        self._thread.start()
        self._at_exit = _exit_hook(weakref.ref(self))
        atexit.register(self._at_exit)

    @staticmethod
    def check_options(max_pending: int = 1024, linger: float = 0.05, max_batch: int = 256) -> None:
        """Refuse a bad queue bound, linger or batch size, with one sentence."""
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}.")
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}.")
        if not isinstance(linger, (int, float)) or isinstance(linger, bool) or not 0 <= linger < float("inf"):
            raise ValueError(f"linger must be a finite number of seconds ≥ 0, got {linger!r}.")

    # -- the training thread's side ----------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Queue one record; blocks while the queue is full (never drops it)."""
        if self._closed:
            raise RuntimeError("the store writer is closed; no more records can be written.")
        if len(self._pending) >= self._max_pending:
            self.stats.waits += 1
            with self._room:
                while len(self._pending) >= self._max_pending:
                    if not self._alive():  # no thread to take them: write them here rather than wait forever
                        self._drain_here()
                        break
                    self._hurry.set()
                    self._room.wait(0.5)
        self._pending.append(record)
        if not self._linger:
            self._hurry.set()

    def flush(self) -> None:
        """Return once every record queued before this call is committed (or has failed)."""
        if self._closed:
            return
        self._wait(_Marker())

    def close(self) -> None:
        """Commit what is queued and stop the thread (the store stays open: it is its owner's to close)."""
        if self._closed:
            return
        self._wait(_Marker(stop=True))
        self._closed = True
        self._thread.join(timeout=5.0)
        atexit.unregister(self._at_exit)

    def report(self) -> None:
        """Pass the failures gathered since the last call to ``warn`` (call it from the owner's thread)."""
        while self._failures:
            key, message = self._failures.popleft()
            self._warn(key, message)

    def _alive(self) -> bool:
        return self._thread.is_alive() and os.getpid() == self._pid

    def _wait(self, marker: _Marker) -> None:
        if not self._alive():
            self._drain_here()
            return
        self._pending.append(marker)
        self._hurry.set()
        while not marker.done.wait(0.5):
            if not self._alive():  # the thread is gone (a forked child): write what is left here
                self._drain_here()
                return

    def _drain_here(self) -> None:
        """Without a writer thread: write what is pending from the calling thread (never in a forked child)."""
        if os.getpid() == self._pid:
            self._drain()
        else:
            self._pending.clear()

    # -- the writer thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._hurry.wait(self._linger or None)  # a batch gathers meanwhile; a flush or close cuts it short
            self._hurry.clear()
            try:
                stop = self._drain()
            except BaseException as error:  # never let the thread die with records still coming
                self._failures.append(("store: the writer", f"the store writer failed ({type(error).__name__}: "
                                                            f"{error}); records may have been lost."))
                stop = False
            if stop:
                return

    def _drain(self) -> bool:
        """Commit everything pending now, ``max_batch`` records per commit, in order; release each marker
        once what precedes it is committed. True when a close marker was met."""
        stop = False
        records: list[Record] = []
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, Record):
                records.append(item)
                if len(records) < self._max_batch:
                    continue
            if records:
                self._write(records)
                records = []
                self._made_room()
            if isinstance(item, _Marker):
                item.done.set()
                stop = stop or item.stop
        if records:
            self._write(records)
            self._made_room()
        return stop

    def _made_room(self) -> None:
        with self._room:
            self._room.notify_all()

    def _write(self, records: list[Record]) -> None:
        """All ``records`` in one commit; if the commit itself fails, each again in its own."""
        done: list[Record] = []
        try:
            with self.store.batch():
                for group in _runs(records):
                    done.extend(self._write_group(group))
            self.stats.commits += 1
            self.stats.written += len(done)
        except WRITE_ERRORS:
            for record in done:  # rolled back with the batch: try them one by one
                try:
                    with self.store.batch():
                        written = self._write_one(record)
                except WRITE_ERRORS as error:
                    self._failed(record, error)
                    continue
                self.stats.commits += 1
                self.stats.written += int(written)

    def _write_group(self, group: list[Record]) -> list[Record]:
        """The records written of ``group``: by their shared ``together`` call where there is one (a
        savepoint), else, or should it fail, one by one."""
        together = group[0].together
        if together is not None and len(group) > 1:
            try:  # all or nothing by itself (the store's savepoint)
                together(self.store, [record.item for record in group])
            except Exception:  # each record gets its own try below, and its own failure report
                pass
            else:
                return group
        return [record for record in group if self._write_one(record)]

    def _write_one(self, record: Record) -> bool:
        """One record inside the open batch, as a savepoint: a failure takes back all it wrote."""
        try:
            if record.atomic:
                record.write(self.store)
            else:
                with self.store.atomic():
                    record.write(self.store)
        except Exception as error:  # one bad record must not cost the others in its batch
            self._failed(record, error)
            return False
        return True

    def _failed(self, record: Record, error: BaseException) -> None:
        self.stats.failed += 1
        at = "" if record.step is None else f" at step {record.step}"
        self._failures.append((f"store: {record.what}", f"could not write {record.what}{at} ({type(error).__name__}: "
                                                        f"{error}); training continues without it."))


def _runs(records: list[Record]) -> list[list[Record]]:
    """``records`` cut into runs of neighbours that share a ``together`` function (a run of one otherwise)."""
    runs: list[list[Record]] = []
    for record in records:
        if runs and record.together is not None and runs[-1][-1].together == record.together:
            runs[-1].append(record)
        else:
            runs.append([record])
    return runs


def _exit_hook(ref: weakref.ref[StoreWriter]) -> Callable[[], None]:
    """At interpreter exit: commit what is still queued and report its failures (holds no strong reference)."""

    def at_exit() -> None:
        writer = ref()
        if writer is not None and not writer._closed:
            if writer.before_exit is not None:
                try:
                    writer.before_exit()
                except Exception as error:  # still commit what is queued
                    writer._failures.append(("store: exit", f"records pending at exit were lost ({type(error).__name__}: {error})."))
            writer.close()
            writer.report()

    return at_exit
