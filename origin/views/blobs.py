"""GET/HEAD blobs, metainfo, locations, prefetch, and the internal replica transfer."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request, send_file

from common.httputil import HTTPError, parse_digest

bp = Blueprint("blobs", __name__)

_CHUNK = 1 << 20


def _wait() -> float:
    """How long a request waits for a refresh before it is answered 202: `?wait=true`
    blocks for the whole refresh; otherwise a short grace, so small blobs and fast
    failures are answered at once."""
    if request.args.get("wait", "").lower() in ("1", "true", "yes"):
        return current_app.config["KRAKEN"].refresh.timeout
    return current_app.config["KRAKEN"].refresh.grace


@bp.route("/namespace/<path:namespace>/blobs/<digest>", methods=["GET", "HEAD"])
def get_blob(namespace: str, digest: str):
    d = parse_digest(digest)
    blobs = current_app.extensions["blobs"]
    store = blobs.store
    # Held only by the storage backend: fetched once however many ask; 202 meanwhile unless
    # the client asked to wait.
    blobs.ensure(namespace, d, _wait())
    resp = send_file(store.path(d), mimetype="application/octet-stream", conditional=True, etag=d.hex)
    resp.headers["Docker-Content-Digest"] = str(d)
    return resp


@bp.get("/namespace/<path:namespace>/blobs/<digest>/metainfo")
def metainfo(namespace: str, digest: str):
    d = parse_digest(digest)
    meta = current_app.extensions["blobs"].metainfo(d, namespace, _wait())
    return Response(meta.torrent(), mimetype="application/x-bittorrent")


@bp.get("/blobs/<digest>/locations")
def locations(digest: str):
    d = parse_digest(digest)
    ring = current_app.extensions["ring"]
    return Response(status=200, headers={"Origin-Locations": ",".join(ring.locations(d))})


@bp.post("/namespace/<path:namespace>/blobs/<digest>/prefetch")
def prefetch(namespace: str, digest: str):
    # Starts a refresh from the backend when the blob is not here; 202 until it is.
    d = parse_digest(digest)
    current_app.extensions["blobs"].metainfo(d, namespace, _wait())
    return Response(status=200)


@bp.put("/internal/namespace/<path:namespace>/blobs/<digest>")
def receive_replica(namespace: str, digest: str):
    d = parse_digest(digest)
    if request.content_length is None:
        raise HTTPError(411, "Content-Length required")

    def chunks():
        while chunk := request.stream.read(_CHUNK):
            yield chunk

    current_app.extensions["blobs"].receive(namespace, d, chunks())
    return Response(status=201)
