"""HTTP client for the proxy: the registry calls other components and tools need (push a
blob or manifest, read a manifest, prefetch an image), not a whole registry client."""

from __future__ import annotations

import os

import requests

from common.digest import Digest
from common.errors import KrakenError, NotFound, Rejected, Unavailable

_TIMEOUT = (3, 300)


class RegistryHTTPError(KrakenError):
    """A registry answer in the spec's error envelope."""

    def __init__(self, status: int, codes: list[str], message: str):
        super().__init__(f"HTTP {status} {','.join(codes)}: {message}")
        self.status = status
        self.codes = codes


def _check(resp: requests.Response, what: str) -> None:
    if resp.status_code < 300:
        return
    try:
        errs = resp.json().get("errors") or [{}]
        codes = [e.get("code", "") for e in errs]
        message = errs[0].get("message", "")
    except ValueError:
        try:
            codes, message = [], resp.json().get("error", resp.text[:200])
        except ValueError:
            codes, message = [], resp.text[:200]
    if resp.status_code >= 500:
        raise Unavailable(f"{what}: HTTP {resp.status_code}: {message}")
    if resp.status_code == 404 and not codes:
        raise NotFound(f"{what}: {message}")
    if not codes:
        raise Rejected(f"{what}: HTTP {resp.status_code}: {message}")
    raise RegistryHTTPError(resp.status_code, codes, f"{what}: {message}")


class ProxyClient:
    def __init__(self, addr: str, session: requests.Session | None = None):
        self.addr = addr
        self.base = f"http://{addr}"
        self.http = session or requests.Session()

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", _TIMEOUT)
        try:
            return self.http.request(method, self.base + path, **kwargs)
        except requests.RequestException as exc:
            raise Unavailable(f"proxy {self.addr} unreachable: {exc}") from None

    def ping(self) -> None:
        _check(self._request("GET", "/v2/"), "ping")

    def push_blob(self, name: str, path: str | os.PathLike, digest: Digest | None = None) -> Digest:
        """Monolithic upload (POST, then PUT with the whole body)."""
        digest = digest or Digest.of_file(path)
        resp = self._request("POST", f"/v2/{name}/blobs/uploads/")
        _check(resp, f"start upload to {name}")
        location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
        with open(path, "rb") as f:
            resp = self.http.put(location, params={"digest": str(digest)}, data=f, timeout=_TIMEOUT,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Length": str(os.path.getsize(path))})
        _check(resp, f"upload {digest} to {name}")
        return digest

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> Digest:
        resp = self._request("PUT", f"/v2/{name}/manifests/{reference}", data=body,
                             headers={"Content-Type": media_type})
        _check(resp, f"put manifest {name}:{reference}")
        return Digest.parse(resp.headers["Docker-Content-Digest"])

    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str, Digest]:
        """(body, media type, digest)."""
        resp = self._request("GET", f"/v2/{name}/manifests/{reference}")
        _check(resp, f"get manifest {name}:{reference}")
        return resp.content, resp.headers["Content-Type"], Digest.parse(resp.headers["Docker-Content-Digest"])

    def prefetch(self, tag: str) -> dict:
        resp = self._request("POST", "/proxy/v1/registry/prefetch", json={"tag": tag})
        _check(resp, f"prefetch {tag}")
        return resp.json()
