"""The agent server port: blobs over P2P."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, send_file

from common.httputil import parse_digest

bp = Blueprint("blobs", __name__)


@bp.route("/namespace/<path:namespace>/blobs/<digest>", methods=["GET", "HEAD"])
def get_blob(namespace: str, digest: str):
    """Blocks until the blob is verified on local disk, then streams it (Range honoured).
    404 when no origin has it; 503 when the swarm cannot deliver it."""
    d = parse_digest(digest)
    path = current_app.extensions["downloader"].ensure(namespace, d)
    resp = send_file(path, mimetype="application/octet-stream", conditional=True, etag=d.hex)
    resp.headers["Docker-Content-Digest"] = str(d)
    return resp


@bp.get("/blobs/<digest>/status")
def status(digest: str):
    """Download progress, for `krakenctl fetch`'s progress bar."""
    return jsonify(current_app.extensions["downloader"].status(parse_digest(digest)))


@bp.delete("/blobs/<digest>")
def delete(digest: str):
    """Drops a blob from the cache and stops seeding it."""
    d = parse_digest(digest)
    dropped = current_app.extensions["seeder"].drop(d)
    return jsonify({"deleted": dropped}), 200 if dropped else 404
