"""A content-addressed blob store on local disk.

Layout under `root`:
    blobs/<2 hex>/<64 hex>       committed blobs, each verified against its name
    meta/<2 hex>/<64 hex>.<kind> small sidecars (metainfo)
    tmp/                         files being written; never served
    uploads/                     resumable upload sessions (origin)
    download/                    torrents being downloaded (agent)

A blob becomes visible only through rename(2) of a complete, fsynced, verified file, so a
reader never sees half a blob, and a crash leaves at most garbage in tmp/ (swept at start).
Publishing (fsync, rename, directory fsync) and sidecar writes run in gevent's thread pool:
while another thread's fsync commits the file system's journal, even creating a file can
wait tens of milliseconds, and on the event loop that held up every other request of the
process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from common.concurrency import in_thread
from common.digest import Digest
from common.errors import DigestMismatch, NotFound

_CHUNK = 1 << 20


def fsync(fd: int) -> None:
    """os.fsync off the event loop. Measured in a cold docker pull through an agent: writing
    each downloaded blob's metainfo sidecar on the loop (create, fsync) stalled the agent
    for 7-31 ms at a time, and the tracker requests of the next layers waited behind it."""
    in_thread(os.fsync, fd)


class CAStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for sub in ("blobs", "meta", "tmp", "uploads", "download"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._sweep_tmp()

    def _sweep_tmp(self) -> None:
        for entry in (self.root / "tmp").iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()

    # Paths. Callers outside this module use them only to hand a file to libtorrent or
    # to sendfile; writes go through the methods below.
    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.shard / digest.hex

    def blob_dir(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.shard

    @property
    def download_dir(self) -> Path:
        return self.root / "download"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    def tmp_path(self) -> Path:
        return self.root / "tmp" / uuid.uuid4().hex

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in store") from None

    def open(self, digest: Digest):
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in store") from None

    def list(self) -> Iterator[Digest]:
        for shard in sorted((self.root / "blobs").iterdir()):
            for entry in sorted(shard.iterdir()):
                yield Digest(entry.name)

    def write_stream(self, digest: Digest, chunks) -> int:
        """Writes an iterable of byte chunks as `digest`, verifying as it goes. Raises
        DigestMismatch (and stores nothing) if the content is not `digest`."""
        tmp = self.tmp_path()
        h = hashlib.sha256()
        n = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
                    n += len(chunk)
                f.flush()
                fsync(f.fileno())
            actual = Digest(h.hexdigest())
            if actual != digest:
                raise DigestMismatch(digest, actual)
            in_thread(self._publish, tmp, digest)
            return n
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def commit_file(self, src: str | os.PathLike, digest: Digest, *, verified: bool = False) -> None:
        """Moves a complete file (an upload, a finished download) into the store. Unless the
        caller already verified it, it is hashed first; on mismatch it is deleted."""
        src = Path(src)
        if not verified:
            actual = in_thread(Digest.of_file, src)
            if actual != digest:
                src.unlink(missing_ok=True)
                raise DigestMismatch(digest, actual)
        in_thread(self._sync_publish, src, digest)

    def _sync_publish(self, src: Path, digest: Digest) -> None:
        with open(src, "rb+") as f:
            os.fsync(f.fileno())
        self._publish(src, digest)

    def _publish(self, src: Path, digest: Digest) -> None:
        """Renames a complete, fsynced file into place (in a pool thread: it blocks)."""
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        _fsync_dir(dest.parent)

    def delete(self, digest: Digest) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        for meta in (self.root / "meta" / digest.shard).glob(f"{digest.hex}.*"):
            meta.unlink(missing_ok=True)
        return True

    def touch(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(digest))

    def last_access(self, digest: Digest) -> float:
        try:
            return self.path(digest).stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in store") from None

    # Sidecars: small derived files, written atomically like blobs.
    def _meta_path(self, digest: Digest, kind: str) -> Path:
        return self.root / "meta" / digest.shard / f"{digest.hex}.{kind}"

    def get_meta(self, digest: Digest, kind: str) -> bytes | None:
        try:
            return self._meta_path(digest, kind).read_bytes()
        except FileNotFoundError:
            return None

    def set_meta(self, digest: Digest, kind: str, data: bytes) -> None:
        in_thread(self._write_meta, self._meta_path(digest, kind), data)

    def _write_meta(self, dest: Path, data: bytes) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_path()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
