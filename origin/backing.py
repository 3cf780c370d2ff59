"""The origin's storage backend: write-back of what it stores, and refresh of what it is
asked for but does not hold (fetched from the backend once per digest however many ask,
then seeded and copied to the other replicas)."""

from __future__ import annotations

import logging
import os
import time

import gevent

from common import backends
from common.backends import BackendError, Manager, keys
from common.concurrency import SingleFlight
from common.digest import Digest
from common.errors import DigestMismatch, NotFound, Pending, Unavailable
from common.store import CAStore
from common.writeback import Item, WriteBackQueue

log = logging.getLogger(__name__)

# A failed refresh is remembered this long, so that clients polling a blob whose backend is
# down get the error at once instead of 202 forever.
FAILURE_MEMORY = 5.0


class _Sink:
    """Writes to a temp file while hashing, so a refreshed blob is verified in one pass."""

    def __init__(self, f):
        import hashlib

        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)


class Backing:
    def __init__(self, store: CAStore, manager: Manager, queue: WriteBackQueue | None, refresh_timeout: float = 600.0):
        self.store = store
        self.manager = manager
        self.queue = queue
        self.refresh_timeout = refresh_timeout
        self._flight = SingleFlight()
        self._failures: dict[Digest, tuple[float, Exception]] = {}
        self.on_refreshed = None  # set by BlobManager: seeds and replicates a refreshed blob

    @classmethod
    def open(cls, store: CAStore, rules, writeback_cfg, refresh_timeout: float = 600.0) -> Backing:
        manager = backends.Manager.from_config(rules)
        queue = None
        if manager:
            path = writeback_cfg.path or os.path.join(store.root, "writeback.sqlite")
            queue = WriteBackQueue(path, manager, _opener(store), base_delay=writeback_cfg.base_delay,
                                   max_delay=writeback_cfg.max_delay)
        return cls(store, manager, queue, refresh_timeout)

    def start(self) -> list[gevent.Greenlet]:
        return [gevent.spawn(self.queue.run, gevent.sleep)] if self.queue else []

    # Write-back.
    def written(self, namespace: str, digest: Digest) -> None:
        if self.queue is not None:
            self.queue.enqueue(namespace, keys.blob(digest))

    # Refresh.
    def refresh(self, namespace: str, digest: Digest, wait: float = 0.0) -> None:
        """Makes sure the blob is on local disk. Returns when it is; raises NotFound when no
        backend has it, Unavailable when the backend fails, Pending when it is still being
        fetched after `wait` seconds."""
        if self.store.exists(digest):
            return
        backend = self.manager.get(namespace)
        if backend is None:
            raise NotFound(f"blob {digest} not found")
        failed = self._failures.get(digest)
        if failed and time.monotonic() - failed[0] < FAILURE_MEMORY and not self._flight.pending(digest):
            raise failed[1]
        try:
            self._flight.do(digest, lambda: self._fetch(namespace, digest, backend), timeout=wait)
        except gevent.Timeout:
            raise Pending(f"blob {digest} is being fetched from the storage backend") from None

    def _fetch(self, namespace: str, digest: Digest, backend) -> None:
        if self.store.exists(digest):
            return
        tmp = self.store.tmp_path()
        started = time.monotonic()
        try:
            with gevent.Timeout(self.refresh_timeout, Unavailable(f"refresh of {digest} timed out")):
                with open(tmp, "wb") as f:
                    sink = _Sink(f)
                    backend.download(namespace, keys.blob(digest), sink)
            actual = Digest.parse("sha256:" + sink.hash.hexdigest())
            if actual != digest:
                raise DigestMismatch(digest, actual)
            self.store.commit_file(tmp, digest, verified=True)
        except backends.NotFound as exc:
            self._remember(digest, NotFound(f"blob {digest} not found: {exc}"))
            raise self._failures[digest][1] from None
        except (BackendError, DigestMismatch, OSError, Unavailable) as exc:
            error = Unavailable(f"cannot fetch blob {digest} from the storage backend: {exc}")
            self._remember(digest, error)
            log.warning("refresh of %s/%s failed: %s", namespace, digest, exc)
            raise error from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._failures.pop(digest, None)
        log.info("refreshed %s/%s from the backend (%d bytes, %.2f s)", namespace, digest, sink.size,
                 time.monotonic() - started)
        if self.on_refreshed is not None:
            self.on_refreshed(namespace, digest)

    def _remember(self, digest: Digest, error: Exception) -> None:
        self._failures[digest] = (time.monotonic(), error)
        if len(self._failures) > 10000:
            self._failures.clear()


def _opener(store: CAStore):
    def opener(item: Item):
        digest = keys.digest_of(item.key)
        try:
            f = open(store.path(digest), "rb")
        except FileNotFoundError:
            raise backends.NotFound(f"{digest} no longer on this origin") from None
        return f, os.fstat(f.fileno()).st_size

    return opener
