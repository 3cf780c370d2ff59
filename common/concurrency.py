"""gevent helpers: run blocking work off the loop, wake waiters on a change, and share one
in-flight call per key."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import gevent
import gevent.event
import gevent.hub

T = TypeVar("T")


def in_thread(fn: Callable[..., T], *args) -> T:
    """Runs fn in gevent's native thread pool and waits for it without blocking other
    greenlets. For hashing and other long CPU work that releases the GIL."""
    return gevent.get_hub().threadpool.apply(fn, args)


class Signal:
    """Wakes every greenlet waiting on it at each `notify`; waiters re-check their own
    condition (a level-triggered event that resets itself)."""

    def __init__(self):
        self._event = gevent.event.Event()

    def notify(self) -> None:
        # Waiters hold the old event, which is set; later waiters get a fresh one.
        old, self._event = self._event, gevent.event.Event()
        old.set()

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout=timeout)


class SingleFlight:
    """Concurrent calls with the same key share one execution and its result or error.
    The call runs in its own greenlet, so a caller that gives up (client disconnects) does
    not cancel the work for the others."""

    def __init__(self):
        self._inflight: dict[Hashable, gevent.event.AsyncResult] = {}

    def do(self, key: Hashable, fn: Callable[[], T], timeout: float | None = None) -> T:
        result = self._inflight.get(key)
        if result is None:
            result = gevent.event.AsyncResult()
            self._inflight[key] = result
            gevent.spawn(self._run, key, fn, result)
        return result.get(timeout=timeout)

    def _run(self, key, fn, result: gevent.event.AsyncResult) -> None:
        try:
            result.set(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            result.set_exception(exc)
        finally:
            self._inflight.pop(key, None)

    def pending(self, key: Hashable) -> bool:
        return key in self._inflight
