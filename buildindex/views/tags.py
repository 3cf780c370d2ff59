"""Tags: put (after the tag type's checks), get, and replication to remote clusters.

Routes take `<path:...>` because Werkzeug decodes %2F before routing, so the `repo:tag`
of `library%2Fbusybox:1` arrives with its slash.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from buildindex.views.params import split_tag
from common.errors import NotFound
from common.httputil import parse_digest

bp = Blueprint("tags", __name__)


def _ext(name: str):
    return current_app.extensions[name]


def lookup(repo: str, tag: str):
    """The tag's digest from the store, else from the storage backend (then remembered)."""
    store = _ext("tag_store")
    digest = store.get(repo, tag)
    if digest is None:
        backend = _ext("tag_backend")
        if backend is None:
            return None
        try:
            digest = backend.get_tag(f"{repo}:{tag}")
        except NotFound:
            return None
        store.put(repo, tag, digest)
    return digest


@bp.put("/tags/<path:ref>/digest/<digest>")
def put_tag(ref: str, digest: str):
    repo, tag = split_tag(ref)
    d = parse_digest(digest)
    kind = _ext("tag_types").for_tag(repo, tag)
    # Raises Rejected (400) naming a missing blob, or Unavailable (503).
    kind.check(repo, tag, d)
    backend = _ext("tag_backend")
    if backend is not None:
        # The backend first: a tag Redis knows must survive Redis being lost.
        backend.put_tag(f"{repo}:{tag}", d)
    _ext("tag_store").put(repo, tag, d)
    _ext("metrics_puts").labels(kind.name).inc()
    if request.args.get("replicate", "").lower() in ("1", "true", "yes"):
        _ext("replicator").enqueue(f"{repo}:{tag}", d)
    return Response(status=200)


@bp.get("/tags/<path:ref>")
def get_tag(ref: str):
    """GET and HEAD (Flask answers HEAD with this view, without the body)."""
    repo, tag = split_tag(ref)
    digest = lookup(repo, tag)
    _ext("metrics_gets").labels("miss" if digest is None else "hit").inc()
    if digest is None:
        raise NotFound(f"tag {repo}:{tag} not found")
    return Response(str(digest), mimetype="text/plain")


@bp.post("/remotes/tags/<path:ref>")
def replicate(ref: str):
    repo, tag = split_tag(ref)
    digest = lookup(repo, tag)
    if digest is None:
        raise NotFound(f"tag {repo}:{tag} not found")
    remotes = _ext("replicator").enqueue(f"{repo}:{tag}", digest)
    return jsonify({"tag": f"{repo}:{tag}", "digest": str(digest), "remotes": remotes})
