"""Tags in the storage backend: every put is queued for write-back (SQLite on local disk,
so it survives restarts and a backend that is down), and a tag Redis does not know is read
from the backend."""

from __future__ import annotations

import os
import time

import gevent

from common import backends
from common.backends import BackendError, Manager, keys
from common.digest import Digest
from common.errors import InvalidDigest, NotFound, Unavailable
from common.writeback import WriteBackQueue


class TagBacking:
    # A repository's tag listing from the backend is reused this long (s).
    LIST_TTL = 10.0

    def __init__(self, manager: Manager, queue: WriteBackQueue):
        self.manager = manager
        self.queue = queue
        self._listed: dict[str, tuple[float, list[str]]] = {}

    @classmethod
    def open(cls, rules, writeback_cfg, state_dir: str) -> TagBacking:
        manager = Manager.from_config(rules)
        path = writeback_cfg.path or os.path.join(state_dir, "writeback.sqlite")
        queue = WriteBackQueue(path, manager, base_delay=writeback_cfg.base_delay, max_delay=writeback_cfg.max_delay)
        return cls(manager, queue)

    def start(self) -> gevent.Greenlet:
        return gevent.spawn(self.queue.run, gevent.sleep)

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        repo, _, tag = name.rpartition(":")
        return repo, tag

    def put_tag(self, name: str, digest: Digest) -> None:
        repo, tag = self._split(name)
        self.queue.enqueue(repo, keys.tag(repo, tag), str(digest).encode())

    def get_tag(self, name: str) -> Digest:
        repo, tag = self._split(name)
        backend = self.manager.get(repo)
        if backend is None:
            raise NotFound(f"tag {name} not found")
        try:
            data = backend.get_bytes(repo, keys.tag(repo, tag))
        except backends.NotFound:
            raise NotFound(f"tag {name} not found") from None
        except BackendError as exc:
            raise Unavailable(f"tag {name}: storage backend: {exc}") from None
        try:
            return Digest.parse(data.decode("ascii", "replace").strip())
        except InvalidDigest as exc:
            raise Unavailable(f"tag {name}: the storage backend holds garbage: {exc}") from None

    def list_repo(self, repo: str) -> list[str]:
        """Tag names of a repository in the backend (for a Redis that lost them)."""
        backend = self.manager.get(repo)
        if backend is None:
            return []
        cached = self._listed.get(repo)
        if cached and time.monotonic() - cached[0] < self.LIST_TTL:
            return cached[1]
        try:
            # The prefix also matches nested repositories (`repo/sub`): keep this one's own.
            tags = [t for r, t in map(keys.split_tag, backend.list(keys.tag(repo, ""))) if r == repo]
        except BackendError:
            return []
        if len(self._listed) > 1000:
            self._listed.clear()
        self._listed[repo] = (time.monotonic(), tags)
        return tags
