"""Leases on results being computed, so that processes analyzing the same run never compute one twice.

A lease is a row of the store's ``claims (run, step, probe, config_hash, owner, expires_at)`` table. It
is taken in one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock, so two processes cannot both take
it) that first checks whether the result is already stored. A lease held by another owner is respected
while it is live: not expired, and — when the owner is a process on this machine — that process still
exists (a ``kill -9``-ed run's leases are taken over at once; another machine's only once expired). A
heartbeat thread pushes this owner's leases forward every third of their lifetime while it works, so a
long probe keeps its lease. Writing the result (or its error) releases the lease in the same transaction.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum

from landscape.store import Store

DEFAULT_TTL = 60.0


class Claim(Enum):
    """The outcome of trying to take a lease."""

    MINE = "mine"      # taken: compute it
    DONE = "done"      # the result is already stored (another process finished it)
    BUSY = "busy"      # another live owner is computing it


def new_owner() -> str:
    """A unique owner name: ``host/pid/nonce`` (the nonce tells two runs of one process apart)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` names a process of this machine that no longer exists."""
    parts = owner.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    host, pid = parts[0], int(parts[1])
    if host != socket.gethostname() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Leases:
    """This process's leases in one store (one owner name), with an optional heartbeat."""

    def __init__(self, store: Store, ttl: float = DEFAULT_TTL, owner: str | None = None) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive seconds, got {ttl}.")
        self.store = store
        self.ttl = float(ttl)
        self.owner = owner or new_owner()

    def claim(self, run: str, step: int, items: Sequence[tuple[str, str]], checkpoint_sha256: str | None,
              done_after: float = float("-inf")) -> dict[str, Claim]:
        """Try to take the leases of ``items`` ((probe, config_hash) pairs) at one step, in one transaction.

        A result stored (for that checkpoint file) at or after ``done_after`` counts as done; a run that
        recomputes passes its start time, so that only what another process wrote since then is kept.
        """
        now = time.time()
        out: dict[str, Claim] = {}
        with self.store._transaction() as db:
            for probe, chash in items:
                key = (run, int(step), probe, chash)
                if db.execute("SELECT 1 FROM results WHERE run=? AND step=? AND probe=? AND config_hash=? "
                              "AND checkpoint_sha256 IS ? AND created_at >= ?",
                              (*key, checkpoint_sha256, done_after)).fetchone():
                    out[probe] = Claim.DONE
                    continue
                held = db.execute("SELECT owner, expires_at FROM claims WHERE run=? AND step=? AND probe=? "
                                  "AND config_hash=?", key).fetchone()
                if held is not None and held[0] != self.owner and held[1] > now and owner_alive(held[0]):
                    out[probe] = Claim.BUSY
                    continue
                db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)", (*key, self.owner, now + self.ttl))
                out[probe] = Claim.MINE
        return out

    def release(self, run: str, step: int, probe: str, chash: str) -> None:
        with self.store._transaction() as db:
            db.execute("DELETE FROM claims WHERE run=? AND step=? AND probe=? AND config_hash=? AND owner=?",
                       (run, int(step), probe, chash, self.owner))

    def release_all(self) -> None:
        """Drop every lease of this owner (on interruption or at the end of a run)."""
        with self.store._transaction() as db:
            db.execute("DELETE FROM claims WHERE owner=?", (self.owner,))

    def renew(self) -> None:
        """Push every lease of this owner ``ttl`` seconds into the future."""
        with self.store._transaction() as db:
            db.execute("UPDATE claims SET expires_at=? WHERE owner=?", (time.time() + self.ttl, self.owner))

    def live_holder(self, run: str, step: int, probe: str, chash: str) -> str | None:
        """The other owner holding a live lease on that result, if any."""
        row = self.store._query("SELECT owner, expires_at FROM claims WHERE run=? AND step=? AND probe=? "
                                "AND config_hash=?", (run, int(step), probe, chash))
        if row and row[0][0] != self.owner and row[0][1] > time.time() and owner_alive(row[0][0]):
            return str(row[0][0])
        return None

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Renew this owner's leases every ``ttl / 3`` seconds in a daemon thread; release them all on exit."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl / 3):
                try:
                    self.renew()
                except Exception:  # noqa: BLE001 - a missed beat only shortens the lease; the next one retries
                    pass

        thread = threading.Thread(target=beat, name="landscape-lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            self.release_all()
