"""Kraken's resumable chunked upload: POST starts, PATCH appends a Content-Range, PUT
commits. Each upload is a file in the store's uploads/ directory (so a commit is a rename on
the same file system) with a small JSON sidecar naming its digest."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gevent.lock

from common.digest import Digest
from common.errors import KrakenError, NotFound

_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_UID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1 << 20


class UploadError(KrakenError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    uid: str
    namespace: str
    digest: Digest
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class UploadManager:
    def __init__(self, root: Path, ttl: float):
        self.root = Path(root)
        self.ttl = ttl
        self._locks: dict[str, gevent.lock.Semaphore] = {}

    def _paths(self, uid: str) -> tuple[Path, Path]:
        if not _UID.match(uid):
            raise NotFound(f"upload {uid[:40]!r} not found")
        return self.root / uid, self.root / f"{uid}.json"

    def start(self, namespace: str, digest: Digest) -> Upload:
        uid = uuid.uuid4().hex
        data, meta = self._paths(uid)
        data.touch()
        meta.write_text(json.dumps({"namespace": namespace, "digest": str(digest)}))
        return Upload(uid, namespace, digest, data)

    def get(self, uid: str, digest: Digest) -> Upload:
        data, meta = self._paths(uid)
        try:
            info = json.loads(meta.read_text())
        except FileNotFoundError:
            raise NotFound(f"upload {uid} not found") from None
        if info["digest"] != str(digest):
            raise NotFound(f"upload {uid} is not for {digest}")
        return Upload(uid, info["namespace"], Digest.parse(info["digest"]), data)

    def lock(self, uid: str) -> gevent.lock.Semaphore:
        return self._locks.setdefault(uid, gevent.lock.Semaphore())

    def patch(self, upload: Upload, content_range: str | None, stream, length: int | None) -> int:
        """Appends the body at `start` of `Content-Range: start-end` (end exclusive).
        Chunks must arrive in order; a short body is cut off again so that a retry of the
        same range starts clean. Returns the new size."""
        m = _RANGE.match((content_range or "").strip())
        if not m:
            raise UploadError(400, f"bad Content-Range {content_range!r}: want start-end")
        start, end = int(m[1]), int(m[2])
        if end < start:
            raise UploadError(400, f"bad Content-Range {content_range!r}: end before start")
        with self.lock(upload.uid):
            size = upload.size
            if start != size:
                raise UploadError(416, f"out-of-order chunk: upload has {size} bytes, chunk starts at {start}")
            if length is not None and length != end - start:
                raise UploadError(400, f"Content-Range spans {end - start} bytes but the body has {length}")
            written = 0
            try:
                with open(upload.path, "r+b") as f:
                    f.seek(start)
                    while written < end - start:
                        chunk = stream.read(min(_CHUNK, end - start - written))
                        if not chunk:
                            break
                        f.write(chunk)
                        written += len(chunk)
                    if written != end - start:
                        f.truncate(start)
                        raise UploadError(400, f"body ended after {written} of {end - start} bytes")
            except OSError:
                with contextlib.suppress(OSError):
                    os.truncate(upload.path, start)
                raise
            return end

    def finish(self, upload: Upload) -> None:
        """Forgets the upload's bookkeeping (the data file has been moved or deleted)."""
        data, meta = self._paths(upload.uid)
        meta.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        self._locks.pop(upload.uid, None)

    def sweep(self) -> int:
        """Deletes uploads idle longer than ttl."""
        cutoff = time.time() - self.ttl
        n = 0
        for meta in self.root.glob("*.json"):
            data = meta.with_suffix("")
            try:
                mtime = max(meta.stat().st_mtime, data.stat().st_mtime if data.exists() else 0)
            except FileNotFoundError:
                continue
            if mtime < cutoff:
                meta.unlink(missing_ok=True)
                data.unlink(missing_ok=True)
                n += 1
        return n
