"""An upstream Docker/OCI registry, read-only: blobs and tags of its repositories, so origins
and build-index can pull through from it. Basic auth, and bearer tokens as the Docker token
spec describes (a 401 names the realm; the token is fetched and cached per scope)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

import requests

from common.backends import Backend, BackendError, NotFound, ReadOnly, keys, register
from common.digest import Digest

CHUNK = 1 << 20
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


@register("registry")
class RegistryBackend(Backend):
    def __init__(self, address: str, scheme: str = "https", username: str = "", password: str = "",
                 timeout: float = 60.0, verify_tls: bool = True):
        self.base = f"{scheme}://{address.rstrip('/')}"
        self.timeout = (min(timeout, 5.0), timeout)
        self.auth = (username, password) if username else None
        self.http = requests.Session()
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the
        # environment override Session.verify, which would silently turn verify_tls=False back on.
        self.verify = verify_tls
        self.tokens: dict[str, str] = {}
        self.lock = threading.Lock()

    # Requests with auth.
    def _request(self, method: str, path: str, scope: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        for attempt in range(2):
            token = self.tokens.get(scope)
            # The bearer token goes in as an auth object, not a bare header: with auth=None
            # requests would let ~/.netrc credentials overwrite it.
            try:
                resp = self.http.request(method, self.base + path, timeout=self.timeout, verify=self.verify,
                                         headers=headers, auth=_Bearer(token) if token else self.auth, **kwargs)
            except requests.RequestException as exc:
                raise BackendError(f"registry {self.base} unreachable: {exc}") from None
            if resp.status_code == 401 and attempt == 0 and self._login(resp, scope):
                resp.close()
                continue
            return resp
        return resp

    def _login(self, resp: requests.Response, scope: str) -> bool:
        challenge = resp.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer"):
            return False
        params = dict(_CHALLENGE.findall(challenge))
        if "realm" not in params:
            return False
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            token_resp = self.http.get(params["realm"], params=query, auth=self.auth, timeout=self.timeout,
                                       verify=self.verify)
        except requests.RequestException as exc:
            raise BackendError(f"registry token service unreachable: {exc}") from None
        if token_resp.status_code != 200:
            raise BackendError(f"registry token service: HTTP {token_resp.status_code}")
        try:
            body = token_resp.json()
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token:
            raise BackendError("registry token service answered without a token")
        with self.lock:
            self.tokens[scope] = token
        return True

    @staticmethod
    def _check(resp: requests.Response, what: str) -> requests.Response:
        if resp.status_code == 404:
            resp.close()
            raise NotFound(f"{what} not in upstream registry")
        if resp.status_code >= 300:
            resp.close()
            raise BackendError(f"upstream registry {what}: HTTP {resp.status_code}")
        return resp

    # What a key means upstream.
    def _target(self, namespace: str, key: str) -> tuple[str, str, str]:
        """(kind, repository, reference) for a key."""
        keys.check(key)
        if key.startswith(keys.BLOBS):
            return "blob", namespace, str(keys.digest_of(key))
        repo, tag = keys.split_tag(key)
        return "tag", repo, tag

    def stat(self, namespace: str, key: str) -> int:
        kind, repo, ref = self._target(namespace, key)
        scope = f"repository:{repo}:pull"
        if kind == "tag":
            return len(self._tag_digest(repo, ref))
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{ref}", scope)
        if resp.status_code == 404:
            resp = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", scope, headers={"Accept": MANIFEST_ACCEPT})
        return int(self._check(resp, key).headers.get("Content-Length", 0))

    def _tag_digest(self, repo: str, tag: str) -> bytes:
        resp = self._check(self._request("HEAD", f"/v2/{repo}/manifests/{quote(tag)}", f"repository:{repo}:pull",
                                         headers={"Accept": MANIFEST_ACCEPT}), f"{repo}:{tag}")
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest:
            raise BackendError(f"upstream registry gave no digest for {repo}:{tag}")
        return Digest.parse(digest).__str__().encode()

    def download(self, namespace: str, key: str, dst: BinaryIO) -> int:
        kind, repo, ref = self._target(namespace, key)
        if kind == "tag":
            data = self._tag_digest(repo, ref)
            dst.write(data)
            return len(data)
        scope = f"repository:{repo}:pull"
        resp = self._request("GET", f"/v2/{repo}/blobs/{ref}", scope, stream=True)
        if resp.status_code == 404:
            # Manifests are blobs to us but have their own endpoint upstream.
            resp.close()
            resp = self._request("GET", f"/v2/{repo}/manifests/{ref}", scope, stream=True,
                                 headers={"Accept": MANIFEST_ACCEPT})
        self._check(resp, key)
        n = 0
        try:
            for chunk in resp.iter_content(CHUNK):
                dst.write(chunk)
                n += len(chunk)
        except requests.RequestException as exc:
            raise BackendError(f"upstream registry: {key} broke off: {exc}") from None
        finally:
            resp.close()
        return n

    def upload(self, namespace: str, key: str, src: BinaryIO, size: int | None = None) -> None:
        raise ReadOnly("the registry backend is read-only")

    def list(self, prefix: str) -> Iterator[str]:
        """Tags of one repository (`tags/<repo>/`); blobs cannot be listed upstream."""
        if not prefix.startswith(keys.TAGS) or not prefix.endswith("/") or prefix == keys.TAGS:
            raise BackendError(f"the registry backend lists only tags of one repository, not {prefix!r}")
        repo = prefix[len(keys.TAGS):-1]
        resp = self._check(self._request("GET", f"/v2/{repo}/tags/list", f"repository:{repo}:pull"), repo)
        tags = resp.json().get("tags") or []
        return iter(sorted(keys.tag(repo, t) for t in tags))
