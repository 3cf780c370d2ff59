"""Tag -> digest mappings. Redis in production (shared by every build-index instance), an
in-memory store for unit tests; one contract test suite runs against both.

Listings are in byte order of the names, which is what makes offset and `last` paging
stable: a page boundary never moves unless names are added before it.
"""

from __future__ import annotations

import bisect
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

from common.digest import Digest


@dataclass(frozen=True)
class Page:
    items: list[str]
    # True when names follow the last item of this page.
    more: bool


class TagStore(ABC):
    @abstractmethod
    def put(self, repo: str, tag: str, digest: Digest) -> None:
        """Maps repo:tag to digest (replacing any earlier digest) and lists both names."""

    @abstractmethod
    def get(self, repo: str, tag: str) -> Digest | None: ...

    @abstractmethod
    def list_tags(self, repo: str, *, offset: int, limit: int, last: str | None = None) -> Page:
        """The repository's tags in order, after `last` if given, skipping `offset`."""

    @abstractmethod
    def list_repos(self, prefix: str, *, offset: int, limit: int, last: str | None = None) -> Page:
        """Repositories whose name starts with `prefix`, in order, as list_tags pages."""

    @abstractmethod
    def ping(self) -> None:
        """Raises if the store cannot answer."""


def _page(names: list[str], limit: int) -> Page:
    return Page(names[:limit], len(names) > limit)


class MemoryTagStore(TagStore):
    def __init__(self):
        self._digests: dict[tuple[str, str], Digest] = {}
        self._tags: dict[str, list[str]] = {}
        self._repos: list[str] = []
        self._lock = threading.Lock()

    @staticmethod
    def _insert(names: list[str], name: str) -> None:
        i = bisect.bisect_left(names, name)
        if i == len(names) or names[i] != name:
            names.insert(i, name)

    def put(self, repo, tag, digest):
        with self._lock:
            self._digests[(repo, tag)] = digest
            self._insert(self._tags.setdefault(repo, []), tag)
            self._insert(self._repos, repo)

    def get(self, repo, tag):
        return self._digests.get((repo, tag))

    @staticmethod
    def _slice(names: list[str], lo: int, hi: int, offset: int, limit: int) -> Page:
        start = lo + offset
        return _page(names[start : min(hi, start + limit + 1)], limit)

    def list_tags(self, repo, *, offset, limit, last=None):
        with self._lock:
            names = self._tags.get(repo, [])
            lo = bisect.bisect_right(names, last) if last is not None else 0
            return self._slice(names, lo, len(names), offset, limit)

    def list_repos(self, prefix, *, offset, limit, last=None):
        with self._lock:
            names = self._repos
            lo = bisect.bisect_left(names, prefix)
            if last is not None:
                lo = max(lo, bisect.bisect_right(names, last))
            # Names are ASCII, so every name starting with prefix sorts before prefix + "\x7f".
            hi = bisect.bisect_left(names, prefix + "\x7f")
            return self._slice(names, lo, hi, offset, limit)

    def ping(self):
        return None


class RedisTagStore(TagStore):
    """`{prefix}tag:{repo}:{tag}` -> digest; `{prefix}tags:{repo}` and `{prefix}repos` are
    sorted sets with every score 0, so Redis keeps them in byte order and ZRANGE /
    ZRANGEBYLEX page them in O(log n + offset + limit)."""

    def __init__(self, redis, prefix: str = "kraken:"):
        self.r = redis
        self.prefix = prefix
        self._repos = f"{prefix}repos"

    def _tag_key(self, repo: str, tag: str) -> str:
        # Neither a repository name nor a tag may contain ':', so keys cannot collide.
        return f"{self.prefix}tag:{repo}:{tag}"

    def _tags_key(self, repo: str) -> str:
        return f"{self.prefix}tags:{repo}"

    def put(self, repo, tag, digest):
        # One transaction, so a reader never sees a listed tag without its digest.
        with self.r.pipeline(transaction=True) as p:
            p.set(self._tag_key(repo, tag), str(digest))
            p.zadd(self._tags_key(repo), {tag: 0})
            p.zadd(self._repos, {repo: 0})
            p.execute()

    def get(self, repo, tag):
        raw = self.r.get(self._tag_key(repo, tag))
        return None if raw is None else Digest.parse(raw.decode())

    def _range(self, key: str, lo: bytes, hi: bytes, offset: int, limit: int) -> Page:
        names = self.r.zrangebylex(key, lo, hi, start=offset, num=limit + 1)
        return _page([n.decode() for n in names], limit)

    def list_tags(self, repo, *, offset, limit, last=None):
        key = self._tags_key(repo)
        if last is None:
            # By rank: O(log n + limit) however deep the offset.
            names = self.r.zrange(key, offset, offset + limit)
            return _page([n.decode() for n in names], limit)
        return self._range(key, b"(" + last.encode(), b"+", offset, limit)

    def list_repos(self, prefix, *, offset, limit, last=None):
        if prefix:
            lo = b"[" + prefix.encode()
            hi = b"(" + prefix.encode() + b"\xff"
        else:
            lo, hi = b"-", b"+"
        if last is not None and last >= prefix:
            lo = b"(" + last.encode()
        return self._range(self._repos, lo, hi, offset, limit)

    def ping(self):
        self.r.ping()
