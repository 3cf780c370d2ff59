"""A plain HTTP file server: GET/HEAD to read, PUT to write, like Kraken's testfs backend.
Listing uses `GET {url}/list/{prefix}` (a JSON list of keys), which `common.backends.testfs`
serves; a server without it can still hold blobs, only `list` fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

import requests

from common.backends import Backend, BackendError, NotFound, keys, register

CHUNK = 1 << 20


@register("http")
class HTTPBackend(Backend):
    def __init__(self, url: str, root: str = "", timeout: float = 30.0, headers: dict | None = None):
        self.url = url.rstrip("/")
        # Keys live under this path on the server (several clusters can share one).
        self.root = root.strip("/") + "/" if root.strip("/") else ""
        self.timeout = (min(timeout, 5.0), timeout)
        self.http = requests.Session()
        self.http.headers.update(headers or {})

    def _request(self, method: str, key: str, **kwargs) -> requests.Response:
        url = f"{self.url}/{quote(self.root + keys.check(key))}"
        try:
            resp = self.http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise BackendError(f"http backend {self.url} unreachable: {exc}") from None
        if resp.status_code == 404:
            resp.close()
            raise NotFound(f"{key} not in http backend")
        if resp.status_code >= 300:
            resp.close()
            raise BackendError(f"http backend {method} {key}: HTTP {resp.status_code}")
        return resp

    def stat(self, namespace: str, key: str) -> int:
        resp = self._request("HEAD", key)
        return int(resp.headers.get("Content-Length", 0))

    def upload(self, namespace: str, key: str, src: BinaryIO, size: int | None = None) -> None:
        def body():
            while chunk := src.read(CHUNK):
                yield chunk

        if size is None:
            try:
                size = os.fstat(src.fileno()).st_size - src.tell()
            except (AttributeError, OSError, ValueError):
                pass  # unknown length: sent chunked
        headers = {"Content-Length": str(size)} if size is not None else {}
        self._request("PUT", key, data=body() if size is None else _Sized(src, size), headers=headers)

    def download(self, namespace: str, key: str, dst: BinaryIO) -> int:
        resp = self._request("GET", key, stream=True)
        n = 0
        try:
            expected = resp.headers.get("Content-Length")
            for chunk in resp.iter_content(CHUNK):
                dst.write(chunk)
                n += len(chunk)
        except requests.RequestException as exc:
            raise BackendError(f"http backend: download of {key} broke off: {exc}") from None
        finally:
            resp.close()
        if expected is not None and int(expected) != n:
            raise BackendError(f"http backend: {key} short read ({n} of {expected} bytes)")
        return n

    def list(self, prefix: str) -> Iterator[str]:
        try:
            resp = self.http.get(f"{self.url}/list/{quote(self.root + prefix)}", timeout=self.timeout)
        except requests.RequestException as exc:
            raise BackendError(f"http backend {self.url} unreachable: {exc}") from None
        if resp.status_code != 200:
            raise BackendError(f"http backend cannot list {prefix!r}: HTTP {resp.status_code}")
        full = self.root + prefix
        return iter(sorted(k[len(self.root):] for k in resp.json() if k.startswith(full)))


class _Sized:
    """A file-like body with a known length, so requests sends Content-Length, not chunks."""

    def __init__(self, src: BinaryIO, size: int):
        self.src, self.len = src, size

    def read(self, n: int = -1) -> bytes:
        return self.src.read(n if n and n > 0 else CHUNK)

    def __len__(self) -> int:
        return self.len
