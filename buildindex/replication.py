"""Cross-cluster tag replication: each tag goes to every remote build-index whose patterns
match it, in the background, retried with exponential backoff a bounded number of times.

The queue is in memory, so tasks still queued when a worker exits are lost (and logged).
A persisted queue, as Kraken's persistedretry keeps in SQLite, comes with the storage
issue; until then `POST /remotes/tags/{tag}` re-queues a tag by hand.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.digest import Digest

log = logging.getLogger(__name__)


class Remotes:
    """Kraken's shape: remote build-index address -> regexes of `repo:tag` (re.search)."""

    def __init__(self, mapping: dict[str, list[str]]):
        self._remotes = [(addr, [re.compile(p) for p in patterns]) for addr, patterns in mapping.items()]

    def match(self, tag: str) -> list[str]:
        return [addr for addr, patterns in self._remotes if any(p.search(tag) for p in patterns)]

    def __bool__(self) -> bool:
        return bool(self._remotes)


@dataclass
class Task:
    remote: str
    tag: str
    digest: Digest
    attempts: int = 0


class Replicator:
    """`send(remote, tag, digest)` raises on failure; the default in cmd.py is
    BuildIndexClient([remote]).put_tag. Worker threads start with the first task (so
    none exists in a gunicorn master) and are greenlets under gevent."""

    def __init__(self, remotes: Remotes, send: Callable[[str, str, Digest], None], *, max_attempts: int = 8,
                 base_delay: float = 1.0, max_delay: float = 120.0, workers: int = 2,
                 on_result: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.remotes = remotes
        self.send = send
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.n_workers = workers
        self.on_result = on_result or (lambda result: None)
        self.clock = clock
        # (due time, sequence, task): the sequence keeps equal due times in FIFO order.
        self._heap: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def enqueue(self, tag: str, digest: Digest) -> list[str]:
        """Queues `tag` for every matching remote; returns their addresses."""
        remotes = self.remotes.match(tag)
        if not remotes:
            return []
        with self._cond:
            if self._stopping:
                raise RuntimeError("replicator is stopped")
            self._start_workers()
            for remote in remotes:
                heapq.heappush(self._heap, (self.clock(), next(self._seq), Task(remote, tag, digest)))
            self._cond.notify_all()
        return remotes

    def pending(self) -> int:
        """Tasks queued or being sent."""
        with self._cond:
            return len(self._heap) + self._busy

    def wait_idle(self, timeout: float) -> bool:
        """For tests and shutdown: True once nothing is queued or in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def stop(self, timeout: float = 2.0) -> None:
        """Gives due tasks a moment to go out, then stops; what is left is logged as lost."""
        self.wait_idle(timeout)
        with self._cond:
            self._stopping = True
            lost = [t for _, _, t in self._heap]
            self._heap.clear()
            self._cond.notify_all()
        for t in lost:
            log.error("replication of %s -> %s to %s dropped at shutdown", t.tag, t.digest, t.remote)
        for th in self._threads:
            th.join(timeout)

    def _start_workers(self) -> None:
        while len(self._threads) < self.n_workers:
            th = threading.Thread(target=self._work, name=f"replicate-{len(self._threads)}", daemon=True)
            self._threads.append(th)
            th.start()

    def _next(self) -> Task | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    due = self._heap[0][0]
                    wait = due - self.clock()
                    if wait <= 0:
                        self._busy += 1
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (task := self._next()) is not None:
            try:
                self._attempt(task)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _attempt(self, task: Task) -> None:
        task.attempts += 1
        try:
            self.send(task.remote, task.tag, task.digest)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then logged
            if task.attempts >= self.max_attempts:
                log.error("replication of %s -> %s to %s failed for good after %d attempts: %s",
                          task.tag, task.digest, task.remote, task.attempts, exc)
                self.on_result("failed")
                return
            delay = min(self.max_delay, self.base_delay * 2 ** (task.attempts - 1))
            log.warning("replication of %s to %s failed (attempt %d/%d), retrying in %.1fs: %s",
                        task.tag, task.remote, task.attempts, self.max_attempts, delay, exc)
            self.on_result("retry")
            with self._cond:
                heapq.heappush(self._heap, (self.clock() + delay, next(self._seq), task))
                self._cond.notify_all()
            return
        log.info("replicated %s -> %s to %s", task.tag, task.digest, task.remote)
        self.on_result("ok")
