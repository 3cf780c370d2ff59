"""A bandwidth cap in front of any backend (bytes per second, each direction), so refreshing
a cold cluster from S3 cannot saturate a shared link."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from common.backends import Backend


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic, sleep=time.sleep):
        self.rate = float(rate)
        self.burst = float(burst or rate)
        self.tokens = self.burst
        self.clock, self.sleep = clock, sleep
        self.last = clock()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        """Blocks until `n` bytes may pass. Large requests are paid in burst-sized steps."""
        while n > 0:
            step = min(n, self.burst)
            with self.lock:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
                self.last = now
                wait = (step - self.tokens) / self.rate if self.tokens < step else 0.0
                self.tokens -= step
            if wait > 0:
                self.sleep(wait)
            n -= step


class _Reader:
    def __init__(self, src: BinaryIO, bucket: TokenBucket):
        self.src, self.bucket = src, bucket

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n if n and n > 0 else 1 << 20)
        self.bucket.take(len(data))
        return data


class _Writer:
    def __init__(self, dst: BinaryIO, bucket: TokenBucket):
        self.dst, self.bucket = dst, bucket

    def write(self, data) -> int:
        self.bucket.take(len(data))
        return self.dst.write(data)


class Throttled(Backend):
    def __init__(self, inner: Backend, egress_bytes_per_sec: float = 0, ingress_bytes_per_sec: float = 0):
        self.inner = inner
        self.name = inner.name
        self.up = TokenBucket(egress_bytes_per_sec) if egress_bytes_per_sec else None
        self.down = TokenBucket(ingress_bytes_per_sec) if ingress_bytes_per_sec else None

    def stat(self, namespace: str, key: str) -> int:
        return self.inner.stat(namespace, key)

    def upload(self, namespace: str, key: str, src: BinaryIO, size: int | None = None) -> None:
        self.inner.upload(namespace, key, _Reader(src, self.up) if self.up else src, size)

    def download(self, namespace: str, key: str, dst: BinaryIO) -> int:
        return self.inner.download(namespace, key, _Writer(dst, self.down) if self.down else dst)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def close(self) -> None:
        self.inner.close()
