"""The proxy's on-disk upload state: ids, ranges, the stale-upload sweep, the lock."""

from __future__ import annotations

import io
import os
import time

import pytest

from common.oci import RegistryError
from proxy.uploads import UploadStore


@pytest.fixture
def store(tmp_path):
    return UploadStore(tmp_path / "uploads", ttl=60)


def test_state_is_shared_through_disk(store, tmp_path):
    upload = store.start("lib/app")
    with store.lock(upload):
        assert store.append(upload, io.BytesIO(b"abcd"), "0-3", 4) == 4
    # Another worker: its own store over the same directory.
    other = UploadStore(tmp_path / "uploads", ttl=60)
    again = other.get("lib/app", upload.uid)
    assert again.size == 4
    with other.lock(again):
        assert other.append(again, io.BytesIO(b"ef"), None, None) == 6
    assert upload.path.read_bytes() == b"abcdef"


@pytest.mark.parametrize("uid", ["../../etc/passwd", "..", "", "a" * 36, "ABCDEF00-0000-4000-8000-000000000000",
                                 "00000000-0000-4000-8000-000000000000/../x"])
def test_hostile_or_unknown_ids(store, uid):
    with pytest.raises(RegistryError) as exc:
        store.get("repo", uid)
    assert exc.value.code == "BLOB_UPLOAD_UNKNOWN"


def test_wrong_repository_is_unknown(store):
    upload = store.start("one")
    with pytest.raises(RegistryError):
        store.get("two", upload.uid)


def test_short_body_is_cut_off_again(store):
    upload = store.start("r")
    store.append(upload, io.BytesIO(b"abcd"), "0-3", None)
    with pytest.raises(RegistryError) as exc:
        store.append(upload, io.BytesIO(b"ef"), "4-9", None)
    assert exc.value.code == "SIZE_INVALID"
    assert upload.path.read_bytes() == b"abcd"


def test_out_of_order_range_keeps_data_and_reports_range(store):
    upload = store.start("r")
    store.append(upload, io.BytesIO(b"abcd"), "0-3", None)
    for bad in ("8-11", "2-5", "5-4"):
        with pytest.raises(RegistryError) as exc:
            store.append(upload, io.BytesIO(b"xxxx"), bad, None)
        assert exc.value.status == 416 and exc.value.headers["Range"] == "0-3"
    with pytest.raises(RegistryError) as exc:
        store.append(upload, io.BytesIO(b"x"), "garbage", None)
    assert exc.value.code == "BLOB_UPLOAD_INVALID"
    assert upload.path.read_bytes() == b"abcd"


def test_sweep_deletes_only_stale_uploads(store):
    old, fresh = store.start("r"), store.start("r")
    scratch = store.scratch()
    scratch.write_bytes(b"left behind")
    past = time.time() - 3600
    for path in (old.path, old.path.with_name(old.uid + ".json"), scratch):
        os.utime(path, (past, past))
    assert store.sweep() == 2
    with pytest.raises(RegistryError):
        store.get("r", old.uid)
    assert store.get("r", fresh.uid).size == 0
    assert not scratch.exists()


def test_lock_sees_a_concurrent_delete(store):
    upload = store.start("r")
    store.delete(upload)
    with pytest.raises(RegistryError) as exc:
        with store.lock(upload):
            pass
    assert exc.value.code == "BLOB_UPLOAD_UNKNOWN"


def test_a_busy_upload_is_refused_after_the_timeout(store):
    upload = store.start("r")
    with store.lock(upload):
        with pytest.raises(RegistryError) as exc:
            with store.lock(upload, timeout=0.05):
                pass
    assert exc.value.status == 409
    with store.lock(upload):  # free again
        pass
