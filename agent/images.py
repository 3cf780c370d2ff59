"""Images as the agent sees them: tags resolved through build-index, manifests and layers
fetched over P2P like any other blob (the namespace is the repository name). Shared by the
registry port and the server port's preloads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.pool

from agent.config import ImagesConfig
from agent.downloader import Downloader
from common import oci
from common.digest import Digest
from common.errors import KrakenError, NotFound, Unavailable

log = logging.getLogger(__name__)

# Tags remembered at most; the cache only has to span one pull.
MAX_CACHED_TAGS = 4096
# Tags asked of build-index per page when listing a repository.
LIST_PAGE = 1000


class NotAManifest(NotFound):
    """The digest names a blob, but not a manifest this registry can serve."""


def split_tag(tag: str) -> tuple[str, str]:
    """`repo:tag` -> (repo, tag). Repository names hold no ':', so the last one splits."""
    repo, sep, name = tag.rpartition(":")
    if not sep or not repo or not name:
        raise ValueError(f"tag {tag[:200]!r} is not of the form repo:tag")
    return repo, name


class Images:
    def __init__(self, build_index, downloader: Downloader, cfg: ImagesConfig,
                 clock: Callable[[], float] = time.monotonic):
        self.build_index = build_index
        self.downloader = downloader
        self.cfg = cfg
        self._clock = clock
        self._tags: dict[str, tuple[float, Digest]] = {}
        self._preloads: dict[tuple[str, Digest], gevent.Greenlet] = {}

    def _index(self):
        if self.build_index is None:
            raise Unavailable("no build-index is configured")
        return self.build_index

    def resolve(self, tag: str) -> Digest:
        """The digest `repo:tag` points at; NotFound when build-index does not know it."""
        now = self._clock()
        hit = self._tags.get(tag)
        if hit is not None and hit[0] > now:
            return hit[1]
        digest = self._index().get_tag(tag)
        if self.cfg.tag_ttl > 0:
            if len(self._tags) >= MAX_CACHED_TAGS:
                self._tags = {k: v for k, v in self._tags.items() if v[0] > now}
                if len(self._tags) >= MAX_CACHED_TAGS:
                    self._tags.clear()
            self._tags[tag] = (now + self.cfg.tag_ttl, digest)
        return digest

    def list_tags(self, repo: str, n: int | None = None, last: str | None = None) -> tuple[list[str], bool]:
        """Tag names of `repo` in order, after `last` when given, at most `n` of them, and
        whether more follow."""
        want = None if n is None else n + 1
        tags: list[str] = []
        offset = None
        while want is None or len(tags) < want:
            limit = LIST_PAGE if want is None else min(LIST_PAGE, want - len(tags))
            page, offset = self._index().list_repo(repo, limit=limit, offset=offset, last=last or None)
            tags.extend(page)
            if offset is None or not page:
                break
        if n is None:
            return tags, False
        return tags[:n], len(tags) > n

    def manifest(self, repo: str, digest: Digest) -> tuple[bytes, oci.Manifest]:
        """The manifest blob, downloaded over P2P (and cached), and what it refers to.
        NotFound when no origin has it, NotAManifest when it is some other blob."""
        got = self.downloader.get(repo, digest)
        if isinstance(got, Path):
            path = got
        else:
            # Refuse a layer before downloading all of it.
            if got.meta.get().length > oci.MAX_MANIFEST_BYTES:
                raise NotAManifest(f"{digest} is larger than any manifest")
            path = got.done.get()
        with open(path, "rb") as f:
            body = f.read(oci.MAX_MANIFEST_BYTES + 1)
        try:
            return body, oci.parse_manifest(body)
        except oci.RegistryError as exc:
            raise NotAManifest(f"{digest} is not a manifest: {exc.message}") from None

    def warm(self, repo: str, manifest: oci.Manifest) -> int:
        """Starts (without waiting) the download of every blob an image manifest names and
        this host lacks; returns how many were started. Failures are the downloads' own
        business: the client's request for the blob reports them."""
        if manifest.is_index:
            return 0
        started = 0
        for blob in dict.fromkeys(manifest.blobs):
            try:
                started += not isinstance(self.downloader.get(repo, blob), Path)
            except KrakenError as exc:
                log.info("warming %s@%s: %s", repo, blob, exc)
        return started

    def preload(self, tag: str) -> Digest:
        """Resolves `repo:tag` now and fetches its manifest and every blob in the background
        (for an index: every platform's manifest and blobs). One preload per image at a time."""
        repo, _ = split_tag(tag)
        digest = self.resolve(tag)
        key = (repo, digest)
        running = self._preloads.get(key)
        if running is None or running.dead:
            g = gevent.spawn(self._preload, repo, digest)
            g.link(lambda _g, key=key: self._preloads.pop(key, None))
            self._preloads[key] = g
        return digest

    def _preload(self, repo: str, digest: Digest) -> None:
        started = time.monotonic()
        try:
            _, top = self.manifest(repo, digest)
            manifests = [top]
            if top.is_index:
                pool = gevent.pool.Pool(self.cfg.preload_concurrency)
                manifests = list(pool.imap(lambda d: self.manifest(repo, d)[1], top.manifests))
        except KrakenError as exc:
            log.warning("preload of %s@%s failed: %s", repo, digest, exc)
            return
        blobs = list(dict.fromkeys(b for m in manifests for b in m.blobs))
        failed: list[str] = []

        def fetch(blob: Digest) -> None:
            try:
                self.downloader.ensure(repo, blob)
            except Exception as exc:  # noqa: BLE001 - one bad blob must not stop the others
                failed.append(f"{blob}: {exc}")

        pool = gevent.pool.Pool(self.cfg.preload_concurrency)
        for blob in blobs:
            pool.spawn(fetch, blob)
        pool.join()
        if failed:
            log.warning("preload of %s@%s: %d of %d blobs failed: %s", repo, digest, len(failed), len(blobs),
                        "; ".join(failed[:5]))
        else:
            log.info("preloaded %s@%s: %d manifests, %d blobs in %.3fs", repo, digest, len(manifests),
                     len(blobs), time.monotonic() - started)
