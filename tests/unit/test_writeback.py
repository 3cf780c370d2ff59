"""The write-back queue: durable across restarts, retries with backoff while the backend is
down, skips blobs the backend already has, leases items so two workers never collide."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from common.backends import BackendError, Manager, NotFound, create, keys
from common.digest import Digest
from common.writeback import WriteBackQueue, _alive, process_id, use_wal


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Flaky:
    """Wraps a real fs backend; while `down`, every call fails as an unreachable backend."""

    def __init__(self, inner):
        self.inner, self.down, self.uploads = inner, False, 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise BackendError("backend down")
            if name in ("upload", "put_bytes"):
                self.uploads += 1
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def setup(tmp_path):
    backend = Flaky(create("fs", {"root": str(tmp_path / "backend")}))
    blobs = {}

    def opener(item):
        if item.key not in blobs:
            raise NotFound(item.key)
        return io.BytesIO(blobs[item.key]), len(blobs[item.key])

    clock = Clock()
    manager = Manager([("ns.*", backend)])
    queue = WriteBackQueue(tmp_path / "wb.sqlite", manager, opener, clock=clock)
    return queue, backend, blobs, clock, manager, opener


def add_blob(blobs, data: bytes) -> str:
    key = keys.blob(Digest.of_bytes(data))
    blobs[key] = data
    return key


def test_item_is_written_back(setup):
    queue, backend, blobs, *_ = setup
    key = add_blob(blobs, b"hello")
    assert queue.enqueue("ns", key)
    assert queue.process_one()
    assert backend.inner.get_bytes("ns", key) == b"hello"
    assert queue.pending() == 0


def test_namespaces_without_backend_are_not_queued(setup):
    queue, *_ = setup
    assert not queue.enqueue("other", "tags/other/1", b"x")
    assert queue.pending() == 0


def test_backend_down_retries_with_backoff_then_succeeds(setup):
    queue, backend, blobs, clock, *_ = setup
    key = add_blob(blobs, b"data")
    queue.enqueue("ns", key)
    backend.down = True
    assert queue.process_one()
    first = queue.items()[0]
    assert first["attempts"] == 1 and "backend down" in first["last_error"]
    # Not due again until its backoff has passed.
    assert not queue.process_one()
    clock.now = first["next_at"] + 0.01
    assert queue.process_one()
    second = queue.items()[0]
    assert second["attempts"] == 2
    assert second["next_at"] - clock.now > (first["next_at"] - 1000.0)  # the delay grew
    backend.down = False
    clock.now = second["next_at"] + 0.01
    assert queue.process_one()
    assert queue.pending() == 0
    assert backend.inner.get_bytes("ns", key) == b"data"


def test_queue_survives_restart(setup, tmp_path):
    queue, backend, blobs, clock, manager, opener = setup
    key = add_blob(blobs, b"persisted")
    backend.down = True
    queue.enqueue("ns", key)
    queue.process_one()
    del queue
    backend.down = False
    clock.now += 3600
    reopened = WriteBackQueue(tmp_path / "wb.sqlite", manager, opener, clock=clock)
    assert reopened.pending() == 1
    assert reopened.process_one()
    assert backend.inner.get_bytes("ns", key) == b"persisted"


def test_blobs_the_backend_has_are_skipped(setup):
    queue, backend, blobs, *_ = setup
    key = add_blob(blobs, b"already there")
    backend.inner.put_bytes("ns", key, b"already there")
    queue.enqueue("ns", key)
    queue.process_one()
    assert backend.uploads == 0 and queue.skipped == 1
    assert queue.pending() == 0


def test_tags_are_always_rewritten(setup):
    queue, backend, *_ = setup
    key = keys.tag("ns/app", "1")
    backend.inner.put_bytes("ns", key, b"old")
    queue.enqueue("ns", key, b"new")
    queue.process_one()
    assert backend.inner.get_bytes("ns", key) == b"new"


def test_item_whose_local_copy_is_gone_is_dropped(setup):
    queue, *_ = setup
    queue.enqueue("ns", keys.blob(Digest.of_bytes(b"gone")))
    assert queue.process_one()
    assert queue.pending() == 0


def test_two_workers_never_upload_the_same_item(setup, tmp_path):
    queue, backend, blobs, clock, manager, opener = setup
    for i in range(30):
        queue.enqueue("ns", add_blob(blobs, f"blob {i}".encode()))
    other = WriteBackQueue(tmp_path / "wb.sqlite", manager, opener, clock=clock)
    threads = [threading.Thread(target=lambda q=q: [None for _ in iter(q.process_one, False)]) for q in (queue, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert backend.uploads == 30
    assert queue.pending() == 0


ROOT = Path(__file__).resolve().parents[2]  # where `common` imports from, for subprocesses
_HOLDER = """
import sys
from common.backends import Manager
from common.writeback import WriteBackQueue
queue = WriteBackQueue(sys.argv[1], Manager([]), clock=lambda: float(sys.argv[2]))
print(queue._claim().key, flush=True)
sys.stdin.read()  # holds the lease until told to go, then exits without recording anything
"""


def test_an_item_leased_by_a_process_that_died_is_taken_over_at_once(setup, tmp_path):
    """A worker killed between claiming an item and recording the outcome (a build-index
    restarted while its backend was down) left the item leased for 10 minutes; the write-back
    of a tag waited that long in CI. A lease names its process, and a dead one's is void."""
    queue, backend, blobs, clock, *_ = setup
    key = add_blob(blobs, b"leased by a worker that dies")
    queue.enqueue("ns", key)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "wb.sqlite"), str(clock.now)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == key
        # While the holder lives, its lease stands.
        assert not queue.process_one()
        assert queue.next_due() == clock.now + queue.lease
    finally:
        holder.communicate("", timeout=30)
    assert queue.next_due() == clock.now
    assert queue.process_one()
    assert backend.inner.get_bytes("ns", key) == b"leased by a worker that dies"
    assert queue.pending() == 0


def test_lease_owners_that_cannot_be_judged_count_as_alive():
    assert _alive(process_id())
    assert _alive("another-host:1:1")  # a queue on shared storage: the lease runs its course
    assert _alive("not an owner")
    gone = subprocess.run([sys.executable, "-c", "from common.writeback import process_id; print(process_id())"],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    assert not _alive(gone.stdout.strip())
    host, pid, started = process_id().split(":")
    assert not _alive(f"{host}:{pid}:{int(started) + 1}")  # the same pid, given to a later process


def test_a_queue_file_from_before_lease_owners_is_carried_on(setup, tmp_path):
    _, backend, blobs, clock, manager, opener = setup
    key = add_blob(blobs, b"queued by an older version")
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE writeback (namespace TEXT NOT NULL, key TEXT NOT NULL, payload BLOB, "
                   "attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, lease_until REAL NOT NULL DEFAULT 0, "
                   "last_error TEXT NOT NULL DEFAULT '', created REAL NOT NULL, PRIMARY KEY (namespace, key))")
        db.execute("INSERT INTO writeback (namespace, key, next_at, created) VALUES ('ns', ?, 0, 0)", (key,))
    queue = WriteBackQueue(path, manager, opener, clock=clock)
    assert queue.process_one()
    assert backend.inner.get_bytes("ns", key) == b"queued by an older version"


class _Locked:
    """A connection whose switch to WAL fails `times` times with `error`."""

    def __init__(self, times: int, error: str = "database is locked"):
        self.times, self.error, self.calls = times, error, 0

    def execute(self, sql):
        self.calls += 1
        if self.calls <= self.times:
            raise sqlite3.OperationalError(self.error)


def test_the_switch_to_wal_is_tried_again_while_another_opener_holds_the_lock():
    db = _Locked(times=3)
    use_wal(db)
    assert db.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        use_wal(_Locked(times=1, error="disk I/O error"))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(_Locked(times=10**6), timeout=0.2)


def _open_together(path, n: int) -> list[Exception]:
    """Opens n queues on `path` from n threads at once; the errors they raised."""
    barrier = threading.Barrier(n)
    errors = []

    def open_queue():
        barrier.wait()
        try:
            WriteBackQueue(path, Manager([]))
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_queue) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_queues_opened_at_once_on_a_fresh_database_all_start(tmp_path):
    # Gunicorn workers open the queue together. Eight threads opening a fresh database
    # together raced on the switch to WAL, and one failed with "database is locked", in
    # 1 to 3 of 50 rounds without use_wal; 50 rounds here.
    for round_ in range(50):
        assert _open_together(tmp_path / f"{round_}.db", 8) == []
