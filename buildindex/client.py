"""Client for build-index, failing over between instances (they share Redis, so any one
answers for all). Tags are `repo:tag`; the client URL-escapes them."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import requests

from common.digest import Digest
from common.errors import InvalidDigest, NotFound, Rejected, Unavailable


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text[:200]))
    except ValueError:
        return resp.text[:200]


class BuildIndexClient:
    def __init__(self, addrs: list[str], session: requests.Session | None = None, timeout=(2, 60)):
        if not addrs:
            raise ValueError("at least one build-index address is needed")
        self.addrs = list(addrs)
        self.http = session or requests.Session()
        self.timeout = timeout

    def _request(self, method: str, path: str, what: str, **kwargs) -> requests.Response:
        """The first answer that is not a server error. 404 -> NotFound and 400 ->
        Rejected are final (every instance would say the same); unreachable instances and
        5xx move on to the next."""
        kwargs.setdefault("timeout", self.timeout)
        errors = []
        for addr in self.addrs:
            try:
                resp = self.http.request(method, f"http://{addr}{path}", **kwargs)
            except requests.RequestException as exc:
                errors.append(f"{addr}: {exc.__class__.__name__}: {exc}")
                continue
            if resp.status_code < 300:
                return resp
            if resp.status_code == 404:
                raise NotFound(f"{what}: {_message(resp)}")
            if resp.status_code == 400:
                raise Rejected(f"{what}: {_message(resp)}")
            errors.append(f"{addr}: HTTP {resp.status_code}: {_message(resp)}")
        raise Unavailable(f"{what}: no build-index answered: {'; '.join(errors)}")

    def ping(self) -> None:
        """Raises Unavailable unless some instance answers /health."""
        self._request("GET", "/health", "build-index health", timeout=(1, 2))

    def put_tag(self, tag: str, digest: Digest, replicate: bool = False) -> None:
        """Raises Rejected when the tag or digest is invalid, or when the image is not
        complete in the origin ring (docker-type tags)."""
        params = {"replicate": "true"} if replicate else None
        self._request("PUT", f"/tags/{quote(tag, safe='')}/digest/{digest}", f"put tag {tag}", params=params)

    def get_tag(self, tag: str) -> Digest:
        resp = self._request("GET", f"/tags/{quote(tag, safe='')}", f"tag {tag}")
        try:
            return Digest.parse(resp.text.strip())
        except InvalidDigest as exc:
            raise Unavailable(f"tag {tag}: build-index answered a malformed digest: {exc}") from None

    def has_tag(self, tag: str) -> bool:
        try:
            self._request("HEAD", f"/tags/{quote(tag, safe='')}", f"tag {tag}")
        except NotFound:
            return False
        return True

    def replicate(self, tag: str) -> list[str]:
        """Queues an existing tag for the remote clusters; returns the remotes it matched.
        Raises NotFound for an unknown tag."""
        resp = self._request("POST", f"/remotes/tags/{quote(tag, safe='')}", f"replicate {tag}")
        return list(resp.json().get("remotes", []))

    def list_repo(self, repo: str, limit: int | None = None, offset: int | None = None,
                  last: str | None = None) -> tuple[list[str], int | None]:
        """One page of the repository's tag names (without `repo:`), sorted, and the
        offset of the next page (None on the last page). `last` starts after that tag."""
        path = f"/repositories/{quote(repo, safe='')}/tags"
        return self._list(path, f"tags of {repo}", limit, offset, last)

    def list_prefix(self, prefix: str, limit: int | None = None, offset: int | None = None,
                    last: str | None = None) -> tuple[list[str], int | None]:
        """One page of repository names starting with `prefix` ("" for all), sorted, and
        the offset of the next page (None on the last page). `last` starts after that
        repository (registry `_catalog` paging)."""
        path = f"/list/{quote(prefix, safe='')}"
        return self._list(path, f"repositories under {prefix!r}", limit, offset, last)

    def _list(self, path, what, limit, offset, last) -> tuple[list[str], int | None]:
        params = {k: v for k, v in (("limit", limit), ("offset", offset), ("last", last)) if v is not None}
        body = self._request("GET", path, what, params=params).json()
        nxt = (body.get("links") or {}).get("next") or ""
        next_offset = None
        if nxt:
            values = parse_qs(urlsplit(nxt).query).get("offset")
            next_offset = int(values[0]) if values else None
        return list(body.get("result") or []), next_offset
