"""Listings, paged by `limit` and `offset` (and, for registry `_catalog`/`tags/list`-style
paging, an optional `last`: only names after it). Kraken's response shape:
`{"size": n, "result": [...], "links": {"next": url or "", "self": url}}`."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from flask import Blueprint, current_app, jsonify, request

from buildindex.views.params import check_prefix, check_repo, check_tag, paging
from common.errors import KrakenError

bp = Blueprint("listing", __name__)


def _respond(path: str, page, limit: int, offset: int, last: str | None):
    def link(off: int) -> str:
        query = {"limit": limit, "offset": off}
        if last is not None:
            query["last"] = last
        return f"{path}?{urlencode(query)}"

    return jsonify({
        "size": len(page.items),
        "result": page.items,
        "links": {"next": link(offset + limit) if page.more else "", "self": link(offset)},
    })


def _page_args():
    cfg = current_app.config["KRAKEN"].listing
    limit, offset = paging(cfg.default_limit, cfg.max_limit)
    return limit, offset, request.args.get("last") or None


@bp.get("/repositories/<path:repo>/tags")
def list_repository(repo: str):
    """The repository's tag names (without `repo:`), as Kraken lists them."""
    repo = check_repo(repo)
    limit, offset, last = _page_args()
    if last is not None:
        check_tag(last)
    store = current_app.extensions["tag_store"]
    page = store.list_tags(repo, offset=offset, limit=limit, last=last)
    if _recover(repo):
        page = store.list_tags(repo, offset=offset, limit=limit, last=last)
    return _respond(f"/repositories/{quote(repo, safe='/')}/tags", page, limit, offset, last)


def _recover(repo: str) -> bool:
    """Redis may have lost tags (flushed, or a new Redis): copies the repository's tags the
    storage backend has and Redis does not back into Redis. True if any came back. The
    backend's listing is cached briefly by the backing, so this is cheap per request."""
    backend = current_app.extensions["tag_backend"]
    if backend is None or not hasattr(backend, "list_repo"):
        return False
    store = current_app.extensions["tag_store"]
    recovered = 0
    for tag in backend.list_repo(repo):
        if store.get(repo, tag) is not None:
            continue
        try:
            store.put(repo, tag, backend.get_tag(f"{repo}:{tag}"))
            recovered += 1
        except KrakenError:
            continue
    return recovered > 0


@bp.get("/list/", defaults={"prefix": ""})
@bp.get("/list/<path:prefix>")
def list_prefix(prefix: str):
    """Repository names starting with `prefix` (the registry catalog); each name is a
    repository that has at least one tag."""
    prefix = check_prefix(prefix)
    limit, offset, last = _page_args()
    if last is not None:
        check_repo(last)
    page = current_app.extensions["tag_store"].list_repos(prefix, offset=offset, limit=limit, last=last)
    return _respond(f"/list/{quote(prefix, safe='/')}", page, limit, offset, last)
