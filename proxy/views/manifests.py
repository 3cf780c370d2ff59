"""GET|HEAD|PUT /v2/<name>/manifests/<tag|digest>."""

from __future__ import annotations

import json

from flask import Response, current_app, request

from common.digest import Digest
from common.errors import InvalidDigest
from common.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryError,
    is_digest_reference,
)
from proxy.manifests import ManifestStore


def _store() -> ManifestStore:
    return current_app.extensions["manifests"]


def get(name: str, reference: str):
    store = _store()
    digest = store.resolve(name, reference)
    if _etag_match(digest):
        return Response(status=304, headers={"Docker-Content-Digest": str(digest), "ETag": f'"{digest}"'})
    body, manifest = store.fetch(name, digest)
    digest, body, media_type = _negotiate(store, name, reference, digest, body, manifest)
    headers = {
        "Docker-Content-Digest": str(digest), "ETag": f'"{digest}"', "Content-Length": str(len(body)),
    }
    if request.method == "HEAD":
        return Response(status=200, headers=headers, content_type=media_type)
    return Response(body, status=200, headers=headers, content_type=media_type)


def _etag_match(digest) -> bool:
    return any(tag.strip().strip('"') == str(digest) for tag in request.headers.get("If-None-Match", "").split(","))


def _accepted() -> set[str]:
    return {part.split(";")[0].strip().lower() for value in request.headers.getlist("Accept")
            for part in value.split(",")}


def _negotiate(store: ManifestStore, name: str, reference: str, digest, body: bytes, manifest):
    """What distribution serves for the client's Accept header: OCI manifests and indexes
    only to clients that list their type (`*/*` does not count); a Docker manifest list
    asked for by tag by a client that does not list that type is answered with its
    linux/amd64 image manifest; Docker image manifests to everyone."""
    accepted = _accepted()
    media_type = manifest.media_type
    if media_type == OCI_MANIFEST and OCI_MANIFEST not in accepted:
        raise RegistryError("MANIFEST_UNKNOWN", "OCI manifest found, but accept header does not support OCI manifests")
    if media_type == OCI_INDEX and OCI_INDEX not in accepted:
        raise RegistryError("MANIFEST_UNKNOWN", "OCI index found, but accept header does not support OCI indexes")
    if media_type == DOCKER_LIST and DOCKER_LIST not in accepted and not is_digest_reference(reference):
        child = _default_platform(body)
        if child is None:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"name": name, "reference": reference[:200]})
        body, manifest = store.fetch(name, child)
        if manifest.media_type == DOCKER_MANIFEST and DOCKER_MANIFEST not in accepted:
            raise RegistryError("MANIFEST_INVALID", "Schema 2 manifest not supported by client")
        return child, body, manifest.media_type
    return digest, body, media_type


def _default_platform(body: bytes):
    for entry in json.loads(body).get("manifests", []):
        platform = entry.get("platform") or {}
        if platform.get("architecture") == "amd64" and platform.get("os") == "linux":
            try:
                return Digest.parse(entry["digest"])
            except (InvalidDigest, KeyError):
                return None
    return None


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
