"""GET /v2/<name>/tags/list and GET /v2/_catalog, from build-index, with `n`/`last` paging
as the distribution spec has it: sorted lexically (build-index lists in byte order), entries
after `last`, at most `n`, and `Link: <...?n=N&last=X>; rel="next"` while more remain."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import current_app, jsonify, request

from common.errors import Rejected
from common.oci import RegistryError

# Build-index refuses larger pages (its listing.max_limit).
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


def _everything(call, key: str) -> list[str]:
    """Every entry of a paged build-index listing."""
    out: list[str] = []
    offset = None
    while True:
        items, offset = call(key, limit=_PAGE, offset=offset)
        out.extend(items)
        if offset is None or not items:
            return out


def _page(call, key: str, n: int | None) -> tuple[list[str], bool]:
    """(entries after `last`, at most n of them; whether more follow)."""
    last = request.args.get("last") or None
    if n == 0:
        return [], False
    if n is not None and n <= _PAGE:
        try:
            items, nxt = call(key, limit=n, last=last)
            return items, nxt is not None and bool(items)
        except Rejected:
            pass  # a `last` build-index finds malformed: filter here instead
    items = sorted(set(_everything(call, key)))
    if last:
        items = [e for e in items if e > last]
    if n is not None and len(items) > n:
        return items[:n], True
    return items, False


def _link(path: str, n: int, entries: list[str]) -> dict:
    return {"Link": f'<{path}?{urlencode({"n": n, "last": entries[-1]})}>; rel="next"'}


def list_tags(name: str):
    build_index = current_app.extensions["build_index"]
    n = _n(None)
    tags, more = _page(build_index.list_repo, name, n)
    if not tags and not build_index.list_repo(name, limit=1)[0]:
        raise RegistryError("NAME_UNKNOWN", detail={"name": name})
    headers = _link(f"/v2/{name}/tags/list", n, tags) if more else {}
    return jsonify({"name": name, "tags": tags}), 200, headers


def catalog():
    cfg = current_app.config["KRAKEN"].registry
    n = _n(cfg.catalog_default_entries, cfg.catalog_max_entries)
    repos, more = _page(current_app.extensions["build_index"].list_prefix, "", n)
    headers = _link("/v2/_catalog", n, repos) if more else {}
    return jsonify({"repositories": repos}), 200, headers
