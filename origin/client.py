"""HTTP clients for origins: `OriginClient` talks to one, `ClusterClient` to the ring,
trying each replica in turn and feeding the ring's health tracker."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from urllib.parse import quote

import requests

from common.digest import Digest
from common.errors import Conflict, KrakenError, NotFound, Pending, Rejected, Unavailable
from common.ring import HashRing

log = logging.getLogger(__name__)

UPLOAD_CHUNK = 32 << 20
_TIMEOUT = (3, 120)


class Unreachable(Unavailable):
    """The origin did not answer at all (refused, reset, timed out). Only this counts
    against its health: a 5xx it answers (its storage backend is down, say) means the
    origin itself is alive."""


def _ns(namespace: str) -> str:
    return quote(namespace, safe="")


def _raise_for(resp: requests.Response, what: str, *, pending: bool = False) -> None:
    """Translates an error status. With `pending`, 202 means "not ready yet" (an origin
    fetching the blob) rather than success."""
    if pending and resp.status_code == 202:
        raise Pending(f"{what}: pending")
    if resp.status_code < 300:
        return
    try:
        message = resp.json().get("error", resp.text)
    except ValueError:
        message = resp.text[:200]
    if resp.status_code == 404:
        raise NotFound(f"{what}: {message}")
    if resp.status_code == 409:
        raise Conflict(f"{what}: {message}")
    if resp.status_code == 400:
        raise Rejected(f"{what}: {message}")
    raise Unavailable(f"{what}: HTTP {resp.status_code}: {message}")


class OriginClient:
    def __init__(self, addr: str, session: requests.Session | None = None):
        self.addr = addr
        self.base = f"http://{addr}"
        self.http = session or requests.Session()

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", _TIMEOUT)
        try:
            return self.http.request(method, self.base + path, **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(f"origin {self.addr} unreachable: {exc}") from None

    def stat(self, namespace: str, digest: Digest) -> int:
        resp = self._request("HEAD", f"/namespace/{_ns(namespace)}/blobs/{digest}")
        _raise_for(resp, f"stat {digest} on {self.addr}", pending=True)
        return int(resp.headers["Content-Length"])

    def locations(self, digest: Digest) -> list[str]:
        resp = self._request("GET", f"/blobs/{digest}/locations")
        _raise_for(resp, f"locations of {digest}")
        return [a for a in resp.headers.get("Origin-Locations", "").split(",") if a]

    def get_metainfo(self, namespace: str, digest: Digest) -> bytes:
        resp = self._request("GET", f"/namespace/{_ns(namespace)}/blobs/{digest}/metainfo")
        _raise_for(resp, f"metainfo of {digest} on {self.addr}", pending=True)
        return resp.content

    def download(self, namespace: str, digest: Digest) -> requests.Response:
        """A streaming response; the caller closes it."""
        resp = self._request("GET", f"/namespace/{_ns(namespace)}/blobs/{digest}", stream=True)
        if resp.status_code != 200:
            resp.close()
            _raise_for(resp, f"download {digest} from {self.addr}", pending=True)
        return resp

    def download_range(self, namespace: str, digest: Digest, start: int, end: int) -> requests.Response:
        """Bytes [start, end) of a blob as a streaming response (206, or 200 for the whole
        blob); the caller closes it."""
        resp = self._request("GET", f"/namespace/{_ns(namespace)}/blobs/{digest}", stream=True,
                             headers={"Range": f"bytes={start}-{end - 1}"})
        if resp.status_code not in (200, 206):
            resp.close()
            _raise_for(resp, f"download {digest} [{start}, {end}) from {self.addr}", pending=True)
        return resp

    def prefetch(self, namespace: str, digest: Digest) -> None:
        resp = self._request("POST", f"/namespace/{_ns(namespace)}/blobs/{digest}/prefetch")
        _raise_for(resp, f"prefetch {digest} on {self.addr}")

    def upload(
        self,
        namespace: str,
        digest: Digest,
        path: str | os.PathLike,
        *,
        chunk_size: int = UPLOAD_CHUNK,
        on_progress: Callable[[int], None] | None = None,
    ) -> bool:
        """Kraken's chunked upload: POST, PATCH each chunk with Content-Range, PUT to
        commit. Returns False when the origin already had the blob (409)."""
        base = f"/namespace/{_ns(namespace)}/blobs/{digest}/uploads"
        resp = self._request("POST", base)
        if resp.status_code == 409:
            return False
        _raise_for(resp, f"start upload of {digest} to {self.addr}")
        location = resp.headers["Location"]
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                chunk = f.read(chunk_size)
                end = offset + len(chunk)
                resp = self._request(
                    "PATCH", location, data=chunk, headers={"Content-Range": f"{offset}-{end}"}
                )
                _raise_for(resp, f"upload chunk {offset}-{end} of {digest}")
                offset = end
                if on_progress:
                    on_progress(offset)
        resp = self._request("PUT", location)
        if resp.status_code == 409:
            return False
        _raise_for(resp, f"commit {digest} to {self.addr}")
        return True

    def replicate(self, namespace: str, digest: Digest, path: str | os.PathLike) -> None:
        """Pushes a committed blob to a fellow replica (origin-to-origin only)."""
        with open(path, "rb") as f:
            resp = self._request(
                "PUT", f"/internal/namespace/{_ns(namespace)}/blobs/{digest}", data=f,
                headers={"Content-Length": str(os.path.getsize(path))},
            )
        if resp.status_code == 409:
            return
        _raise_for(resp, f"replicate {digest} to {self.addr}")


class ClusterClient:
    """The origin ring as one store: each call goes to the digest's replicas in ring order
    and moves on when one is unreachable."""

    def __init__(self, ring: HashRing, session: requests.Session | None = None):
        self.ring = ring
        self.http = session or requests.Session()

    def client(self, addr: str) -> OriginClient:
        return OriginClient(addr, self.http)

    def _each(self, digest: Digest, call, *, every: bool = False):
        """Calls `call(client)` on each replica until one answers (with `every`, on all of
        them; the first answer is returned). NotFound from one replica is not final while
        others may hold the blob."""
        # Healthy replicas first (with stand-ins for unhealthy ones), then the true replicas
        # that were marked unhealthy: a member that just came back may be the only holder.
        addrs = self.ring.locations(digest)
        addrs += [a for a in self.ring.ranked(digest)[: self.ring.replicas] if a not in addrs]
        errors: list[KrakenError] = []
        answered, first = False, None
        for addr in addrs:
            try:
                result = call(self.client(addr))
            except Unavailable as exc:
                if isinstance(exc, Unreachable):
                    self.ring.health.failed(addr)
                errors.append(exc)
                continue
            except (NotFound, Pending) as exc:
                self.ring.health.succeeded(addr)
                errors.append(exc)
                continue
            self.ring.health.succeeded(addr)
            if not every:
                return result
            if not answered:
                answered, first = True, result
        if answered:
            return first
        # Pending beats NotFound beats Unavailable: the most useful thing to tell a caller.
        for kind in (Pending, NotFound):
            for exc in errors:
                if isinstance(exc, kind):
                    raise exc
        raise Unavailable(f"no origin answered for {digest}: {'; '.join(map(str, errors))}")

    def upload(self, namespace: str, digest: Digest, path, **kwargs) -> bool:
        return self._each(digest, lambda c: c.upload(namespace, digest, path, **kwargs))

    def get_metainfo(self, namespace: str, digest: Digest) -> bytes:
        return self._each(digest, lambda c: c.get_metainfo(namespace, digest))

    def stat(self, namespace: str, digest: Digest) -> int:
        return self._each(digest, lambda c: c.stat(namespace, digest))

    def download(self, namespace: str, digest: Digest) -> requests.Response:
        return self._each(digest, lambda c: c.download(namespace, digest))

    def download_range(self, namespace: str, digest: Digest, start: int, end: int) -> requests.Response:
        return self._each(digest, lambda c: c.download_range(namespace, digest, start, end))

    def prefetch(self, namespace: str, digest: Digest) -> None:
        """Asks every replica to hold the blob, not only the first that has it: one that
        lacks it (its disk lost) fetches it from the backend and seeds it again, while the
        others keep serving. Raises as the other calls when none has it."""
        return self._each(digest, lambda c: c.prefetch(namespace, digest), every=True)
