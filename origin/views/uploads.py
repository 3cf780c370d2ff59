"""POST/PATCH/PUT /namespace/{ns}/blobs/{digest}/uploads[/{uid}]."""

from __future__ import annotations

import errno
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request

from common.httputil import HTTPError, parse_digest
from origin.uploads import UploadError

bp = Blueprint("uploads", __name__)


def _url(namespace: str, digest, uid: str) -> str:
    return f"/namespace/{quote(namespace, safe='')}/blobs/{digest}/uploads/{uid}"


@bp.post("/namespace/<path:namespace>/blobs/<digest>/uploads")
def start(namespace: str, digest: str):
    d = parse_digest(digest)
    if current_app.extensions["blobs"].has(d):
        raise HTTPError(409, f"blob {d} already exists")
    upload = current_app.extensions["uploads"].start(namespace, d)
    return Response(status=202, headers={"Location": _url(namespace, d, upload.uid), "Upload-Id": upload.uid})


@bp.patch("/namespace/<path:namespace>/blobs/<digest>/uploads/<uid>")
def patch(namespace: str, digest: str, uid: str):
    d = parse_digest(digest)
    uploads = current_app.extensions["uploads"]
    upload = uploads.get(uid, d)
    try:
        end = uploads.patch(upload, request.headers.get("Content-Range"), request.stream, request.content_length)
    except UploadError as exc:
        raise HTTPError(exc.status, str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HTTPError(507, "origin disk is full; chunk not stored") from None
        raise
    return Response(status=202, headers={"Location": _url(namespace, d, uid), "Range": f"0-{end}"})


@bp.put("/namespace/<path:namespace>/blobs/<digest>/uploads/<uid>")
def commit(namespace: str, digest: str, uid: str):
    d = parse_digest(digest)
    uploads = current_app.extensions["uploads"]
    upload = uploads.get(uid, d)
    with uploads.lock(uid):
        try:
            # DigestMismatch -> 400 and Conflict -> 409 through the error handler; the
            # upload's data is gone either way, so nothing partial is left to serve.
            current_app.extensions["blobs"].commit(upload.namespace, d, upload.path)
        finally:
            uploads.finish(upload)
    return Response(status=201, headers={"Location": f"/namespace/{quote(namespace, safe='')}/blobs/{d}"})
