"""GET|HEAD|PUT /v2/<name>/manifests/<tag|digest>."""

from __future__ import annotations

from flask import Response, current_app, request

from common.oci import MAX_MANIFEST_BYTES, RegistryError
from proxy.manifests import ManifestStore


def _store() -> ManifestStore:
    return current_app.extensions["manifests"]


def get(name: str, reference: str):
    store = _store()
    digest = store.resolve(name, reference)
    body, manifest = store.fetch(name, digest)
    _check_accept(manifest.media_type, name, reference)
    headers = {
        "Docker-Content-Digest": str(digest), "ETag": f'"{digest}"', "Content-Length": str(len(body)),
    }
    if request.method == "HEAD":
        return Response(status=200, headers=headers, content_type=manifest.media_type)
    return Response(body, status=200, headers=headers, content_type=manifest.media_type)


def _check_accept(media_type: str, name: str, reference: str) -> None:
    """A client that lists manifest types in Accept and not this one cannot read it
    (distribution answers MANIFEST_UNKNOWN for an OCI manifest a client did not ask for).
    No Accept, or `*/*`, takes whatever was pushed."""
    accepted = {part.split(";")[0].strip() for value in request.headers.getlist("Accept") for part in value.split(",")}
    accepted.discard("")
    if not accepted or media_type in accepted or "*/*" in accepted:
        return
    if not any(a.startswith("application/vnd.") for a in accepted):
        return
    raise RegistryError("MANIFEST_UNKNOWN", f"{media_type} found, but the Accept header does not include it",
                        detail={"name": name, "reference": reference[:200]})


def put(name: str, reference: str):
    if request.content_length is not None and request.content_length > MAX_MANIFEST_BYTES:
        raise RegistryError("MANIFEST_INVALID", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    body = request.stream.read(MAX_MANIFEST_BYTES + 1)
    digest, _ = _store().put(name, reference, body, request.content_type)
    return Response(status=201, headers={
        "Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": str(digest), "Content-Length": "0",
    })


def delete(name: str, reference: str):
    # Tags and manifests are immutable here, like distribution with deletes disabled.
    raise RegistryError("UNSUPPORTED")
