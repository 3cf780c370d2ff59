"""Config sections that several components share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    # Extra gunicorn settings (e.g. {"workers": 4} for the tracker, {"accesslog": "-"}).
    gunicorn: dict = field(default_factory=dict)
    # Reverse proxies (nginx) in front of this server whose X-Forwarded-For is trusted.
    # The tracker needs the real client address for peers that do not send `ip=`.
    trusted_proxies: int = 0

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class RingConfig:
    """The origin cluster as every component sees it: members as host:port."""

    members: tuple[str, ...] = ()
    replicas: int = 2
    # Passive health: this many failures in a row take a member out for `cooldown` s.
    fail_threshold: int = 3
    cooldown: float = 30.0
    # Active health: each member's /health is asked this often (s); 0 turns it off.
    check_interval: float = 5.0

    def build(self, default_members: tuple[str, ...] = (), *, check: bool = True, skip: str = ""):
        """The HashRing, and when `check`, a greenlet running active health checks on it
        (call after the fork, from a component's build_app)."""
        from common.ring import ActiveHealthCheck, HashRing, HealthTracker

        ring = HashRing(self.members or default_members, self.replicas,
                        HealthTracker(self.fail_threshold, self.cooldown))
        if check and self.check_interval > 0:
            import gevent

            checker = ActiveHealthCheck(ring.members, ring.health, self.check_interval, skip=skip)
            ring.checker = gevent.spawn(checker.run, gevent.sleep)
        return ring


@dataclass(frozen=True)
class RedisConfig:
    addr: str = "127.0.0.1:6379"
    db: int = 0
    password: str = ""

    def client(self):
        import redis

        host, _, port = self.addr.rpartition(":")
        return redis.Redis(
            host=host, port=int(port), db=self.db, password=self.password or None,
            socket_timeout=5, socket_connect_timeout=2, health_check_interval=30,
        )


@dataclass(frozen=True)
class WriteBackConfig:
    """The persisted queue that copies what a component stores to its storage backend."""

    # SQLite file; empty means `writeback.sqlite` beside the component's local store.
    path: str = ""
    # Retry delay after the first failure, doubled per attempt up to max_delay (seconds).
    base_delay: float = 1.0
    max_delay: float = 300.0
