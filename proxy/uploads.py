"""Blob uploads in progress, on local disk so that every gunicorn worker sees the same ones:
`<dir>/<uuid>` holds the bytes received so far and `<dir>/<uuid>.json` the repository and
start time. Writers of one upload exclude each other with flock on the data file (across
workers), polled so that a gevent worker never blocks its loop."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent

from common.concurrency import in_thread
from common.digest import Digest
from common.oci import RegistryError

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# `Content-Range: <start>-<end>`, end INCLUSIVE (OCI distribution spec); distribution also
# accepts a `bytes ` / `bytes=` prefix from some clients.
_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_CHUNK = 1 << 20


def unknown(uid: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uid[:100]})


@dataclass(frozen=True)
class Upload:
    uid: str
    name: str
    path: Path
    started_at: float

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class UploadStore:
    def __init__(self, root: str | os.PathLike, ttl: float):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl

    def _paths(self, uid: str) -> tuple[Path, Path]:
        # Only ids we could have made: anything else (../, NUL, upper case) names no upload.
        if not _UUID.match(uid):
            raise unknown(uid)
        return self.root / uid, self.root / f"{uid}.json"

    def start(self, name: str) -> Upload:
        uid = str(uuid.uuid4())
        data, meta = self._paths(uid)
        data.touch()
        now = time.time()
        tmp = meta.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"name": name, "started_at": now}))
        tmp.rename(meta)
        return Upload(uid, name, data, now)

    def get(self, name: str, uid: str) -> Upload:
        """The upload, for requests under the repository that started it."""
        data, meta = self._paths(uid)
        try:
            info = json.loads(meta.read_text())
        except (FileNotFoundError, ValueError):
            raise unknown(uid) from None
        if info.get("name") != name or not data.exists():
            raise unknown(uid)
        return Upload(uid, name, data, info.get("started_at", 0.0))

    @contextlib.contextmanager
    def lock(self, upload: Upload, timeout: float = 30.0) -> Iterator[None]:
        """Exclusive use of an upload across workers. The upload may be gone once the lock
        is ours (a concurrent cancel or commit): BLOB_UPLOAD_UNKNOWN then."""
        try:
            fd = os.open(upload.path, os.O_RDWR)
        except FileNotFoundError:
            raise unknown(upload.uid) from None
        try:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RegistryError("BLOB_UPLOAD_INVALID", "upload is busy with another request",
                                            status=409) from None
                    gevent.sleep(delay)
                    delay = min(delay * 2, 0.2)
            if not upload.path.exists():
                raise unknown(upload.uid)
            yield
        finally:
            os.close(fd)

    def append(self, upload: Upload, stream, content_range: str | None, length: int | None) -> int:
        """Writes a PATCH (or final PUT) body at the end of the upload, streaming. With
        `Content-Range: start-end` (inclusive) the chunk must start where the upload ends,
        else RANGE_INVALID 416 and the upload keeps what it had. A body that ends early is
        cut off again, so that a retry of the same chunk starts clean. Returns the new size;
        call with the upload locked."""
        size = upload.size
        want = None
        if content_range:
            m = _RANGE.match(content_range.strip())
            if not m:
                raise RegistryError("BLOB_UPLOAD_INVALID", f"bad Content-Range {content_range[:100]!r}: want start-end",
                                    detail={"Content-Range": content_range[:100]})
            start, end = int(m[1]), int(m[2])
            if start > end or start != size:
                raise RegistryError(
                    "RANGE_INVALID", f"chunk {start}-{end} does not start at the upload's end ({size} bytes)",
                    headers=self.headers(upload, size),
                )
            want = end - start + 1
            if length is not None and length != want:
                raise RegistryError("SIZE_INVALID", f"Content-Range spans {want} bytes but Content-Length is {length}")
        elif length is not None:
            want = length
        written = 0
        try:
            with open(upload.path, "r+b") as f:
                f.seek(size)
                while want is None or written < want:
                    chunk = stream.read(_CHUNK if want is None else min(_CHUNK, want - written))
                    if not chunk:
                        break
                    f.write(chunk)
                    written += len(chunk)
                if want is not None and written != want:
                    raise RegistryError("SIZE_INVALID", f"body ended after {written} of {want} bytes")
        except BaseException:
            # Also on a client that hung up mid-chunk (OSError, gevent's timeouts).
            with contextlib.suppress(OSError):
                os.truncate(upload.path, size)
            raise
        return size + written

    @staticmethod
    def headers(upload: Upload, size: int) -> dict:
        """Location, Range (last byte received, inclusive; "0-0" when empty, as
        distribution answers) and Docker-Upload-UUID."""
        return {
            "Location": f"/v2/{upload.name}/blobs/uploads/{upload.uid}",
            "Range": f"0-{max(size - 1, 0)}",
            "Docker-Upload-UUID": upload.uid,
        }

    def digest(self, upload: Upload) -> Digest:
        return in_thread(Digest.of_file, upload.path)

    def delete(self, upload: Upload) -> None:
        data, meta = self._paths(upload.uid)
        meta.unlink(missing_ok=True)
        data.unlink(missing_ok=True)

    def scratch(self) -> Path:
        """A fresh path in the uploads directory for a temporary file (a manifest on its way
        to the origins); swept like an upload if it is left behind."""
        return self.root / f"tmp-{uuid.uuid4()}"

    def sweep(self) -> int:
        """Deletes uploads (and scratch files) idle longer than the TTL."""
        cutoff = time.time() - self.ttl
        n = 0
        for path in self.root.iterdir():
            if path.suffix == ".json" or path.name.endswith(".tmp"):
                continue
            meta = path.with_name(path.name + ".json")
            try:
                mtime = max(path.stat().st_mtime, meta.stat().st_mtime if meta.exists() else 0)
            except FileNotFoundError:
                continue
            if mtime < cutoff:
                meta.unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                n += 1
        # State files whose data file is gone (a crash between the two unlinks).
        for meta in self.root.glob("*.json"):
            if not meta.with_suffix("").exists():
                with contextlib.suppress(FileNotFoundError):
                    if meta.stat().st_mtime < cutoff:
                        meta.unlink()
        if n:
            log.info("swept %d stale uploads", n)
        return n
