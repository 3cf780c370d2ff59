import os
import time

import pytest

from common.digest import Digest
from common.errors import DigestMismatch, NotFound
from common.store import CAStore


def test_write_stream_verifies_and_publishes(tmp_path):
    store = CAStore(tmp_path)
    data = os.urandom(3 << 20)
    d = Digest.of_bytes(data)
    assert store.write_stream(d, [data[:1000], data[1000:]]) == len(data)
    assert store.exists(d) and store.size(d) == len(data)
    with store.open(d) as f:
        assert f.read() == data
    assert list(store.list()) == [d]


def test_mismatch_stores_nothing_and_leaves_no_temp_file(tmp_path):
    store = CAStore(tmp_path)
    d = Digest.of_bytes(b"expected")
    with pytest.raises(DigestMismatch):
        store.write_stream(d, [b"something else"])
    assert not store.exists(d)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_failed_writer_never_exposes_a_partial_blob(tmp_path):
    store = CAStore(tmp_path)
    d = Digest.of_bytes(b"a" * 100)

    def chunks():
        yield b"a" * 50
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.write_stream(d, chunks())
    assert not store.exists(d)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_commit_file_checks_digest_and_deletes_bad_source(tmp_path):
    store = CAStore(tmp_path)
    src = tmp_path / "upload"
    src.write_bytes(b"payload")
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(DigestMismatch):
        store.commit_file(src, wrong)
    assert not src.exists() and not store.exists(wrong)
    src.write_bytes(b"payload")
    right = Digest.of_bytes(b"payload")
    store.commit_file(src, right)
    assert store.exists(right) and not src.exists()


def test_leftover_temp_files_are_swept_at_start(tmp_path):
    CAStore(tmp_path)
    (tmp_path / "tmp" / "junk").write_bytes(b"half a blob")
    CAStore(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_delete_removes_blob_and_sidecars(tmp_path):
    store = CAStore(tmp_path)
    d = Digest.of_bytes(b"x")
    store.write_stream(d, [b"x"])
    store.set_meta(d, "torrent", b"meta")
    assert store.get_meta(d, "torrent") == b"meta"
    assert store.delete(d)
    assert store.get_meta(d, "torrent") is None
    with pytest.raises(NotFound):
        store.size(d)
    assert not store.delete(d)


def test_fsyncs_and_sidecar_writes_leave_the_event_loop_running(tmp_path, monkeypatch, loop_ticks):
    # An fsync may take tens of milliseconds while the journal commits; the store runs its
    # fsyncs in gevent's thread pool, so other greenlets (requests) go on meanwhile. A slow
    # fsync stands in for a busy disk here: 0.3 s, about 60 of the loop's 5 ms ticks, of
    # which 10 must come (a loop standing still gives 0 or 1). With 0.1 s, pauses of this
    # process on a busy host left 6-9 ticks in about 1 % of runs.
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    store = CAStore(tmp_path)
    data = b"blob"
    d = Digest.of_bytes(data)
    for write in (lambda: store.write_stream(d, [data]),  # file and directory: 2 fsyncs
                  lambda: store.set_meta(d, "torrent", b"meta")):
        before = len(loop_ticks)
        write()
        assert len(loop_ticks) - before >= 10, "the event loop stood still during an fsync"
    src = tmp_path / "upload"
    src.write_bytes(b"other")
    before = len(loop_ticks)
    store.commit_file(src, Digest.of_bytes(b"other"))
    assert len(loop_ticks) - before >= 10, "the event loop stood still during an fsync"
    assert store.get_meta(d, "torrent") == b"meta"
    assert store.exists(Digest.of_bytes(b"other"))
