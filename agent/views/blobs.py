"""The agent server port: blobs over P2P."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from werkzeug.wsgi import wrap_file

from agent.downloader import DiskFull, Downloader
from agent.streamfile import READ_CHUNK
from common.digest import Digest
from common.httputil import HTTPError, parse_digest, register_status

register_status(DiskFull, 507)  # Insufficient Storage, as the origin answers a full disk

bp = Blueprint("blobs", __name__)


def _range_error(message: str) -> Exception:
    return HTTPError(416, message)


def send_blob(downloader: Downloader, namespace: str, d: Digest,
              range_error: Callable[[str], Exception] = _range_error) -> Response:
    """A cached blob is sent from disk. Otherwise the blob is downloaded over P2P and
    streamed as its verified pieces arrive (Range honoured either way); both go out with
    sendfile. NotFound when no
    origin has it; Unavailable when the swarm cannot deliver it, before or during the body.
    Shared by the server port and the registry port, which raise their own range error."""
    got = downloader.get(namespace, d)
    if isinstance(got, Path):
        resp = send_file(got, mimetype="application/octet-stream", conditional=True, etag=d.hex)
        resp.headers["Docker-Content-Digest"] = str(d)
        return resp
    meta = got.meta.get()  # NotFound -> 404 here, before any header is sent
    total = meta.length
    start, end, status = 0, total, 200
    headers = {"Docker-Content-Digest": str(d), "Accept-Ranges": "bytes", "ETag": f'"{d.hex}"'}
    if request.range is not None:
        span = request.range.range_for_length(total)
        if span is None:
            raise range_error(f"range not satisfiable for {total} bytes")
        start, end, status = span[0], span[1], 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status=status, headers=headers, mimetype="application/octet-stream")
    # gunicorn sends it with sendfile as its pieces pass (common.sendfile).
    body = wrap_file(request.environ, downloader.stream(got, start, end), READ_CHUNK)
    return Response(body, status=status, headers=headers, mimetype="application/octet-stream",
                    direct_passthrough=True)


@bp.route("/namespace/<path:namespace>/blobs/<digest>", methods=["GET", "HEAD"])
def get_blob(namespace: str, digest: str):
    """Blocks until the blob is on local disk or streaming, then sends it: 200 (206 for a
    range), 400 bad digest, 404 unknown everywhere, 5xx otherwise."""
    return send_blob(current_app.extensions["downloader"], namespace, parse_digest(digest))


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
