"""Rendezvous (highest random weight) hashing over the origin cluster.

Each digest ranks every member by hash(member, digest); the first `replicas` healthy members
hold it. Removing a member moves only the blobs it held, and every host computes the same
answer without coordination.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable

from common.digest import Digest


class HealthTracker:
    """Passive health: a member that failed `fail_threshold` times in a row is left out for
    `cooldown` seconds, then tried again. Active checks feed the same two methods."""

    def __init__(self, fail_threshold: int = 3, cooldown: float = 30.0, clock=time.monotonic):
        self._fails: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._threshold = fail_threshold
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()

    def failed(self, member: str) -> None:
        with self._lock:
            n = self._fails.get(member, 0) + 1
            self._fails[member] = n
            if n >= self._threshold:
                self._down_until[member] = self._clock() + self._cooldown

    def succeeded(self, member: str) -> None:
        with self._lock:
            self._fails.pop(member, None)
            self._down_until.pop(member, None)

    def healthy(self, member: str) -> bool:
        until = self._down_until.get(member)
        return until is None or self._clock() >= until


class HashRing:
    def __init__(self, members: Iterable[str], replicas: int, health: HealthTracker | None = None):
        self.members = tuple(dict.fromkeys(members))
        if not self.members:
            raise ValueError("a hash ring needs at least one member")
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.replicas = min(replicas, len(self.members))
        self.health = health or HealthTracker()

    @staticmethod
    def _score(member: str, digest: Digest) -> bytes:
        return hashlib.sha256(f"{member}|{digest.hex}".encode()).digest()

    def ranked(self, digest: Digest) -> list[str]:
        """Every member, best first: the order to try when replicas fail."""
        return sorted(self.members, key=lambda m: self._score(m, digest), reverse=True)

    def locations(self, digest: Digest) -> list[str]:
        """The first `replicas` healthy members; when fewer are healthy, the best of the
        rest fill up, so callers always have somewhere to try."""
        ranked = self.ranked(digest)
        healthy = [m for m in ranked if self.health.healthy(m)]
        rest = [m for m in ranked if m not in healthy]
        return (healthy + rest)[: self.replicas]


class ActiveHealthCheck:
    """Active health: every `interval` seconds each member's `/health` is asked, and the
    answer is fed to the same HealthTracker the passive checks use. So a member that died
    leaves the ring's answers within about `interval * fail_threshold` seconds even when
    no request happened to touch it, and comes back after its first good answer."""

    def __init__(self, members: Iterable[str], health: HealthTracker, interval: float = 5.0, timeout: float = 2.0,
                 path: str = "/health", skip: str = ""):
        self.members = [m for m in dict.fromkeys(members) if m != skip]
        self.health = health
        self.interval = interval
        self.timeout = timeout
        self.path = path

    def check_once(self, session=None) -> dict[str, bool]:
        import requests

        http = session or requests
        results = {}
        for member in self.members:
            try:
                # No keep-alive: an idle connection held open to every fellow member would
                # make each one's graceful shutdown wait for it.
                ok = http.get(f"http://{member}{self.path}", headers={"Connection": "close"},
                              timeout=(min(1.0, self.timeout), self.timeout)).status_code == 200
            except requests.RequestException:
                ok = False
            (self.health.succeeded if ok else self.health.failed)(member)
            results[member] = ok
        return results

    def run(self, sleep=time.sleep) -> None:
        import requests

        session = requests.Session()
        while True:
            self.check_once(session)
            sleep(self.interval)
