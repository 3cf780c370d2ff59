"""GET /v2/<name>/tags/list and GET /v2/_catalog, from build-index, with `n`/`last` paging
as the distribution spec has it: sorted lexically, entries after `last`, at most `n`, and a
`Link: <...?n=N&last=X>; rel="next"` header while more remain."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import current_app, jsonify, request

from common.oci import RegistryError

# Build-index pages fetched per call while collecting a whole listing.
_PAGE = 1000


def _n(default: int | None, maximum: int | None = None) -> int | None:
    raw = request.args.get("n")
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0 or (maximum is not None and n > maximum):
        raise RegistryError("PAGINATION_NUMBER_INVALID", detail={"n": raw[:50]})
    return n


def _collect(call, key: str) -> list[str]:
    """Every entry of a paged build-index listing."""
    out: list[str] = []
    offset = None
    while True:
        items, offset = call(key, limit=_PAGE, offset=offset)
        out.extend(items)
        if offset is None or not items:
            return out


def _page(entries: list[str], n: int | None, path: str):
    last = request.args.get("last")
    entries = sorted(set(entries))
    if last:
        entries = [e for e in entries if e > last]
    more = False
    if n is not None and len(entries) > n:
        entries, more = entries[:n], True
    headers = {}
    if more and entries:
        headers["Link"] = f'<{path}?{urlencode({"n": n, "last": entries[-1]})}>; rel="next"'
    return entries, headers


def list_tags(name: str):
    tags = [t.split(":", 1)[1] if t.startswith(name + ":") else t
            for t in _collect(current_app.extensions["build_index"].list_repo, name)]
    if not tags:
        raise RegistryError("NAME_UNKNOWN", detail={"name": name})
    page, headers = _page(tags, _n(None), f"/v2/{name}/tags/list")
    return jsonify({"name": name, "tags": page}), 200, headers


def catalog():
    cfg = current_app.config["KRAKEN"].registry
    n = _n(cfg.catalog_default_entries, cfg.catalog_max_entries)
    repos = [_repo_of(e) for e in _collect(current_app.extensions["build_index"].list_prefix, "")]
    page, headers = _page(repos, n, "/v2/_catalog")
    return jsonify({"repositories": page}), 200, headers


def _repo_of(entry: str) -> str:
    """Build-index may list tags (`repo:tag`) rather than repositories."""
    head, sep, tail = entry.rpartition(":")
    return head if sep and "/" not in tail else entry
