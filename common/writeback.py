"""Write-back to the storage backend through a persisted retry queue.

Every blob an origin commits and every tag build-index stores is queued here, in SQLite on
local disk, before the client hears success; a worker copies each item to the namespace's
backend, retrying with exponential backoff while the backend is down. The queue survives
restarts, and several processes may share one file: an item is leased before it is
worked on, so two workers never upload it at once. A lease names the process holding it,
and one held by a process that has died (killed mid-upload, or stopped between claiming
an item and recording its failure) is taken over at once rather than when it runs out.
Items the backend already holds are skipped (one stat instead of an upload)."""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.backends import BackendError, Manager, NotFound

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS writeback (
    namespace   TEXT NOT NULL,
    key         TEXT NOT NULL,
    payload     BLOB,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, key)
)
"""


@dataclass(frozen=True)
class Item:
    namespace: str
    key: str
    payload: bytes | None
    attempts: int


class WriteBackQueue:
    """`opener(item)` returns a readable file with the item's bytes and its size, for items
    queued without a payload (blobs, read from the local store when their turn comes); it
    raises NotFound when the local copy is gone, which drops the item."""

    def __init__(
        self,
        path: str | Path,
        backends: Manager,
        opener: Callable[[Item], tuple[BinaryIO, int]] | None = None,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        lease: float = 600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.backends = backends
        self.opener = opener
        self.base_delay, self.max_delay, self.lease = base_delay, max_delay, lease
        self.clock = clock
        self.wakeup = threading.Event()
        self.uploaded = 0
        self.skipped = 0
        with closing(self._db()) as db, db:
            use_wal(db)
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(writeback)")}
            if "lease_owner" not in columns:  # a queue file from before owners were recorded
                try:
                    db.execute("ALTER TABLE writeback ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''")
                except sqlite3.OperationalError as exc:  # another opener added it just now
                    if "duplicate column" not in str(exc):
                        raise

    def _db(self) -> sqlite3.Connection:
        # Autocommit; the one multi-statement step (claiming) opens its own transaction.
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    # Producers.
    def enqueue(self, namespace: str, key: str, payload: bytes | None = None) -> bool:
        """Queues an item (durably: the row is committed when this returns). Namespaces with
        no backend are not queued; returns whether the item was."""
        if self.backends.get(namespace) is None:
            return False
        now = self.clock()
        with closing(self._db()) as db, db:
            db.execute(
                "INSERT INTO writeback (namespace, key, payload, next_at, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET payload = excluded.payload, next_at = excluded.next_at, "
                "attempts = 0, lease_until = 0, lease_owner = ''",
                (namespace, key, payload, now, now),
            )
        self.wakeup.set()
        return True

    def pending(self) -> int:
        with closing(self._db()) as db:
            return db.execute("SELECT COUNT(*) FROM writeback").fetchone()[0]

    def items(self) -> list[dict]:
        with closing(self._db()) as db:
            rows = db.execute(
                "SELECT namespace, key, attempts, next_at, last_error FROM writeback ORDER BY created").fetchall()
        return [dict(zip(("namespace", "key", "attempts", "next_at", "last_error"), r)) for r in rows]

    # The worker.
    def _claim(self) -> Item | None:
        now = self.clock()
        with closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                orphans = _dead_owners(db, now)
                row = db.execute(
                    "SELECT namespace, key, payload, attempts FROM writeback WHERE next_at <= ? AND "
                    f"(lease_until <= ? OR lease_owner IN ({','.join('?' * len(orphans))})) "
                    "ORDER BY next_at LIMIT 1", (now, now, *orphans)).fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return None
                db.execute("UPDATE writeback SET lease_until = ?, lease_owner = ? WHERE namespace = ? AND key = ?",
                           (now + self.lease, process_id(), row[0], row[1]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Item(row[0], row[1], row[2], row[3])

    def _done(self, item: Item) -> None:
        with closing(self._db()) as db, db:
            # Only if nobody re-queued it meanwhile (a new payload resets the lease).
            db.execute("DELETE FROM writeback WHERE namespace = ? AND key = ? AND lease_until > 0",
                       (item.namespace, item.key))

    def _retry(self, item: Item, error: str) -> float:
        attempts = item.attempts + 1
        delay = min(self.max_delay, self.base_delay * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
        with closing(self._db()) as db, db:
            db.execute(
                "UPDATE writeback SET attempts = ?, next_at = ?, lease_until = 0, lease_owner = '', last_error = ? "
                "WHERE namespace = ? AND key = ?",
                (attempts, self.clock() + delay, error[:500], item.namespace, item.key))
        return delay

    def process_one(self) -> bool:
        """Works on one due item; False when none is due."""
        item = self._claim()
        if item is None:
            return False
        backend = self.backends.get(item.namespace)
        if backend is None:
            log.warning("write-back: %s no longer has a backend; dropping %s", item.namespace, item.key)
            self._done(item)
            return True
        try:
            try:
                backend.stat(item.namespace, item.key)
                exists = item.payload is None  # tags may change: always rewrite them
            except NotFound:
                exists = False
            if exists:
                self.skipped += 1
            elif item.payload is not None:
                backend.put_bytes(item.namespace, item.key, item.payload)
                self.uploaded += 1
            else:
                src, size = self.opener(item)
                with src:
                    backend.upload(item.namespace, item.key, src, size)
                self.uploaded += 1
        except NotFound as exc:
            log.error("write-back: local copy of %s is gone, dropping it: %s", item.key, exc)
            self._done(item)
            return True
        except (BackendError, OSError) as exc:
            delay = self._retry(item, str(exc))
            log.warning("write-back of %s/%s failed (attempt %d), retrying in %.1f s: %s",
                        item.namespace, item.key, item.attempts + 1, delay, exc)
            return True
        self._done(item)
        log.info("written back %s/%s", item.namespace, item.key)
        return True

    def next_due(self) -> float | None:
        with closing(self._db()) as db:
            orphans = _dead_owners(db, self.clock())
            row = db.execute(
                f"SELECT MIN(CASE WHEN lease_owner IN ({','.join('?' * len(orphans))}) THEN next_at "
                "ELSE MAX(next_at, lease_until) END) FROM writeback", orphans).fetchone()
        return row[0]

    def run(self, sleep: Callable[[float], None] = time.sleep, idle: float = 5.0) -> None:
        """Forever: work through due items, then sleep until the next is due (at most
        `idle` s, or until `enqueue` wakes us)."""
        while True:
            try:
                while self.process_one():
                    pass
                due = self.next_due()
            except sqlite3.Error as exc:
                log.error("write-back queue %s: %s", self.path, exc)
                due = None
            wait = idle if due is None else max(0.0, min(idle, due - self.clock()))
            self.wakeup.clear()
            if wait > 0:
                self._wait(wait, sleep)

    def _wait(self, seconds: float, sleep: Callable[[float], None]) -> None:
        # Short naps so an enqueue is picked up promptly under gevent too (a threading.Event
        # wait would block the hub unless threading is patched).
        deadline = time.monotonic() + seconds
        while not self.wakeup.is_set() and time.monotonic() < deadline:
            sleep(min(0.1, seconds))


def use_wal(db: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switches `db` to write-ahead logging (it stays so in the file). Processes opening a
    fresh database at once, such as a component's gunicorn workers, can each hold a read
    lock while asking for the write lock the switch needs; SQLite then fails one of them at
    once with "database is locked" instead of waiting out the busy timeout (a build-index
    worker died of it at boot). That one tries again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def process_id() -> str:
    """This process, as a lease names it: host, pid and the pid's start time (so a later
    process that was given the same pid is not taken for the one that held the lease).
    Worked out once per process (keyed by pid, as gunicorn forks its workers)."""
    return _process_id(os.getpid())


@functools.cache
def _process_id(pid: int) -> str:
    stat = _stat(pid)
    return f"{socket.gethostname()}:{pid}:{stat[1] if stat else ''}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a running process, from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # Fields 3 and 22, counted after the command name, which may itself hold spaces.
            fields = f.read().rpartition(b")")[2].split()
        return fields[0].decode(), fields[19].decode()
    except (OSError, IndexError):
        return None


def _alive(owner: str) -> bool:
    """Whether the process a lease names still runs. Owners on another host (a queue file on
    shared storage) or in an unknown format count as alive: their lease runs its course."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
        return True
    pid, started = int(parts[1]), parts[2]
    if not started:  # taken where /proc was not to be read: the lease runs its course
        return True
    stat = _stat(pid)
    # A zombie (killed, not yet reaped) holds its pid but will never finish the upload.
    return stat is not None and stat[1] == started and stat[0] not in ("Z", "X")


def _dead_owners(db: sqlite3.Connection, now: float) -> list[str]:
    """Owners of leases not yet run out whose processes are gone."""
    owners = db.execute("SELECT DISTINCT lease_owner FROM writeback WHERE lease_until > ? AND lease_owner != ''",
                        (now,)).fetchall()
    return [owner for (owner,) in owners if not _alive(owner)]
