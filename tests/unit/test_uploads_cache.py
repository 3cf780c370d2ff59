"""Upload bookkeeping and cache eviction, on a real temp directory."""

import io
import os

import pytest

from agent.cache import Evictor
from common.digest import Digest
from common.errors import NotFound
from common.store import CAStore
from origin.uploads import UploadError, UploadManager


def test_upload_chunks_must_arrive_in_order(tmp_path):
    m = UploadManager(tmp_path, ttl=60)
    d = Digest.of_bytes(b"abcdef")
    up = m.start("ns", d)
    assert m.patch(up, "0-3", io.BytesIO(b"abc"), 3) == 3
    with pytest.raises(UploadError) as err:
        m.patch(up, "5-6", io.BytesIO(b"f"), 1)
    assert err.value.status == 416
    assert m.patch(up, "bytes 3-6", io.BytesIO(b"def"), 3) == 6
    assert up.path.read_bytes() == b"abcdef"


def test_short_body_is_cut_back_so_a_retry_starts_clean(tmp_path):
    m = UploadManager(tmp_path, ttl=60)
    up = m.start("ns", Digest.of_bytes(b"x"))
    with pytest.raises(UploadError) as err:
        m.patch(up, "0-10", io.BytesIO(b"only5"), None)
    assert err.value.status == 400 and up.size == 0


def test_upload_ids_cannot_escape_the_directory(tmp_path):
    m = UploadManager(tmp_path / "uploads", ttl=60)
    (tmp_path / "uploads").mkdir()
    with pytest.raises(NotFound):
        m.get("../../etc/passwd", Digest.of_bytes(b"x"))
    up = m.start("ns", Digest.of_bytes(b"x"))
    with pytest.raises(NotFound):
        m.get(up.uid, Digest.of_bytes(b"y"))  # an upload is bound to its digest


def test_sweep_drops_idle_uploads(tmp_path):
    m = UploadManager(tmp_path, ttl=60)
    up = m.start("ns", Digest.of_bytes(b"x"))
    old = os.path.getmtime(up.path) - 120
    for p in (up.path, up.path.with_name(up.uid + ".json")):
        os.utime(p, (old, old))
    assert m.sweep() == 1 and not up.path.exists()


class FakeSeeder:
    def __init__(self, store):
        self.store = store
        self.dropped = []

    def drop(self, digest):
        self.dropped.append(digest)
        return self.store.delete(digest)


def put(store, data, atime):
    d = Digest.of_bytes(data)
    store.write_stream(d, [data])
    os.utime(store.path(d), (atime, atime))
    return d


def test_evicts_idle_blobs_then_least_recently_used_beyond_capacity(tmp_path):
    store = CAStore(tmp_path)
    now = 10_000.0
    idle = put(store, b"i" * 100, now - 5000)
    old = put(store, b"o" * 100, now - 300)
    mid = put(store, b"m" * 100, now - 200)
    new = put(store, b"n" * 100, now - 100)
    seeder = FakeSeeder(store)
    evicted = Evictor(store, seeder, capacity_bytes=200, idle_ttl=3600, clock=lambda: now).sweep()
    assert evicted == [str(idle), str(old)]
    assert store.exists(mid) and store.exists(new)
    assert Evictor(store, seeder, capacity_bytes=200, idle_ttl=3600, clock=lambda: now).sweep() == []
