"""Blob uploads: POST starts one (or uploads a whole blob with `?digest=`, or mounts one with
`?mount=`), PATCH appends, GET tells how far it got, PUT `?digest=` verifies and hands the
blob to the origin ring, DELETE cancels."""

from __future__ import annotations

import logging

from flask import Response, current_app, request

from common.errors import NotFound, Pending, Unavailable
from common.oci import NAME_RE, RegistryError, parse_digest
from proxy.uploads import Upload, UploadStore

log = logging.getLogger(__name__)


def _store() -> UploadStore:
    return current_app.extensions["uploads"]


def _created(name: str, digest) -> Response:
    return Response(status=201, headers={
        "Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest), "Content-Length": "0",
    })


def _progress(upload: Upload, size: int, status: int) -> Response:
    return Response(status=status, headers={**UploadStore.headers(upload, size), "Content-Length": "0"})


def _in_ring(name: str, digest) -> bool:
    try:
        current_app.extensions["origins"].stat(name, digest)
    except Pending:
        return True  # an origin is fetching it from its backend: it exists
    except (NotFound, Unavailable):
        # Unavailable: no origin could say (its storage backend is down, say). A mount is
        # only a shortcut, so the client uploads the blob instead of the push failing.
        return False
    return True


def start(name: str):
    mount, source = request.args.get("mount"), request.args.get("from")
    if mount:
        # Blobs live in one content-addressed ring, so any repository's blob can be
        # mounted; a malformed `from` or digest just means a normal upload, as in
        # distribution.
        try:
            digest = parse_digest(mount)
        except RegistryError:
            digest = None
        if digest is not None and (source is None or NAME_RE.match(source)) and _in_ring(name, digest):
            return _created(name, digest)
    store = _store()
    upload = store.start(name)
    if "digest" in request.args:
        # Monolithic upload: POST with the whole blob and its digest.
        return _commit(upload, request.args["digest"])
    return _progress(upload, 0, 202)


def status(name: str, uid: str):
    upload = _store().get(name, uid)
    return _progress(upload, upload.size, 204)


def patch(name: str, uid: str):
    store = _store()
    upload = store.get(name, uid)
    with store.lock(upload):
        size = store.append(upload, request.stream, request.headers.get("Content-Range"), request.content_length)
    return _progress(upload, size, 202)


def finish(name: str, uid: str):
    upload = _store().get(name, uid)
    digest = request.args.get("digest")
    if not digest:
        raise RegistryError("DIGEST_INVALID", "digest missing", detail="digest missing")
    return _commit(upload, digest)


def cancel(name: str, uid: str):
    store = _store()
    upload = store.get(name, uid)
    with store.lock(upload):
        store.delete(upload)
    return Response(status=204, headers={"Docker-Upload-UUID": uid, "Content-Length": "0"})


def _commit(upload: Upload, digest_arg: str) -> Response:
    """Takes the final body, checks the digest and uploads to the ring. On a mismatch the
    upload is deleted (distribution cancels it too) and nothing becomes visible; when the
    ring fails, the upload stays so that the client can retry the PUT."""
    store = _store()
    digest = parse_digest(digest_arg)
    with store.lock(upload):
        store.append(upload, request.stream, request.headers.get("Content-Range"), request.content_length)
        actual = store.digest(upload)
        if actual != digest:
            store.delete(upload)
            raise RegistryError("DIGEST_INVALID", f"digest mismatch: expected {digest}, got {actual}",
                                detail={"expected": str(digest), "actual": str(actual)})
        created = current_app.extensions["origins"].upload(upload.name, digest, upload.path)
        store.delete(upload)
    log.info("blob %s of %s %s", digest, upload.name, "uploaded" if created else "already in the ring")
    return _created(upload.name, digest)
