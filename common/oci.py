"""What the OCI distribution spec / Docker Registry v2 fixes, shared by every registry-facing
app (the proxy's push and pull API, the agent's read-only registry port, build-index's tag
checks): the error table and envelope, name and tag grammar, manifest media types and the
digests a manifest refers to."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from common import errors
from common.digest import Digest

log = logging.getLogger(__name__)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")

# Error codes and their statuses, as distribution's registry/api/errcode and
# registry/api/v2/errors.go register them.
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "RANGE_INVALID": (416, "invalid content range"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "The operation is unsupported."),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "UNAVAILABLE": (503, "service unavailable"),
    "UNKNOWN": (500, "unknown error"),
}


class RegistryError(errors.KrakenError):
    """An error a registry client sees, with its spec code. `status` overrides the table
    where the spec allows another (e.g. 416 for an upload's out-of-order range)."""

    def __init__(self, code: str, message: str | None = None, detail=None, status: int | None = None,
                 headers: dict | None = None, more: tuple[RegistryError, ...] = ()):
        """`more`: further errors reported in the same envelope (distribution lists every
        blob a manifest is missing, one MANIFEST_BLOB_UNKNOWN each)."""
        default_status, default_message = CODES[code]
        super().__init__(message or default_message)
        self.code = code
        self.message = message or default_message
        self.detail = detail
        self.status = status or default_status
        self.headers = headers or {}
        self.more = tuple(more)


def envelope(code: str, message: str, detail=None) -> dict:
    entry = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return {"errors": [entry]}


# Our own exception families as registry errors, when nothing more specific was raised.
_FAMILY_CODES = (
    (errors.InvalidDigest, "DIGEST_INVALID"),
    (errors.DigestMismatch, "DIGEST_INVALID"),
    (errors.NotFound, "BLOB_UNKNOWN"),
    (errors.Unavailable, "UNAVAILABLE"),
)


def error_response(code: str, message: str, status: int, detail=None, headers: dict | None = None,
                   more: tuple[RegistryError, ...] = ()) -> Response:
    doc = envelope(code, message, detail)
    doc["errors"] += [envelope(e.code, e.message, e.detail)["errors"][0] for e in more]
    body = json.dumps(doc)
    resp = Response(body, status=status, content_type="application/json")
    resp.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    if request.method == "HEAD":
        resp.set_data(b"")
        resp.headers["Content-Length"] = str(len(body))
    return resp


def install_registry_errors(app: Flask, prefix: str = "/v2") -> None:
    """Errors under `prefix` in the spec's envelope; other paths keep the app's own handler
    (call this after `httputil.install_error_handler`)."""
    previous = app.error_handler_spec[None][None].get(Exception)

    @app.errorhandler(Exception)
    def _handle(exc: Exception):
        if not request.path.startswith(prefix):
            if previous is not None:
                return previous(exc)
            raise exc
        more = ()
        if isinstance(exc, RegistryError):
            code, message, status, detail, headers = exc.code, exc.message, exc.status, exc.detail, exc.headers
            more = exc.more
        elif isinstance(exc, HTTPException):
            status = exc.code or 500
            code = {404: "NAME_UNKNOWN", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}.get(status, "UNKNOWN")
            message, detail, headers = exc.description or CODES[code][1], None, {}
            if status == 404:
                message = "no such route"
        else:
            code = next((c for cls, c in _FAMILY_CODES if isinstance(exc, cls)), None)
            if code is None:
                log.exception("unhandled error on %s %s", request.method, request.path)
                code, message = "UNKNOWN", "internal error"
            else:
                message = str(exc)
            status, detail, headers = CODES[code][0], None, {}
        if status >= 500:
            log.warning("%s %s -> %d %s: %s", request.method, request.path, status, code, message)
        return error_response(code, message, status, detail, headers, more)


# Repository names: path components of lowercase alphanumerics joined by one separator
# (".", "_", "__" or dashes), joined by "/"; at most 255 characters (distribution/reference).
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
MAX_NAME = 255


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not NAME_RE.match(name):
        raise RegistryError("NAME_INVALID", f"invalid repository name: {name[:300]!r}", detail={"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise RegistryError("TAG_INVALID", f"invalid tag: {tag[:200]!r}", detail={"tag": tag[:200]})
    return tag


def is_digest_reference(reference: str) -> bool:
    return ":" in reference


def parse_digest(value: str) -> Digest:
    """A digest in a registry URL or query, DIGEST_INVALID when malformed or not sha256."""
    try:
        return Digest.parse(value) if value.startswith("sha256:") else _unsupported_digest(value)
    except errors.InvalidDigest as exc:
        raise RegistryError("DIGEST_INVALID", str(exc), detail={"digest": value[:200]}) from None


def _unsupported_digest(value: str) -> Digest:
    raise errors.InvalidDigest(f"unsupported or malformed digest {value[:100]!r} (only sha256 is accepted)")


# Manifest media types.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
# Larger manifests are refused, as distribution does (4 MiB).
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True)
class Manifest:
    media_type: str
    # Image manifests: config and layers, which must be blobs. Indexes: the per-platform
    # manifests, which must be manifests.
    blobs: tuple[Digest, ...]
    manifests: tuple[Digest, ...]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse_manifest(body: bytes, content_type: str | None = None) -> Manifest:
    """Parses and checks a manifest; MANIFEST_INVALID names what is wrong. The media type is
    the document's own `mediaType`, else the request's Content-Type, else inferred (an OCI
    manifest may omit it)."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError("MANIFEST_INVALID", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest is not a JSON object")
    declared = doc.get("mediaType")
    header = (content_type or "").split(";")[0].strip()
    if declared and header in MANIFEST_TYPES and declared != header:
        raise RegistryError("MANIFEST_INVALID", f"mediaType {declared!r} does not match Content-Type {header!r}")
    media_type = declared or (header if header in MANIFEST_TYPES else None)
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise RegistryError("MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "schemaVersion must be 2")

    def digests(entries, what) -> tuple[Digest, ...]:
        if not isinstance(entries, list):
            raise RegistryError("MANIFEST_INVALID", f"{what} must be a list")
        out = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                raise RegistryError("MANIFEST_INVALID", f"{what}: every entry needs a digest")
            try:
                out.append(Digest.parse(entry["digest"]))
            except errors.InvalidDigest as exc:
                raise RegistryError("MANIFEST_INVALID", f"{what}: {exc}") from None
            if not isinstance(entry.get("size"), int) or entry["size"] < 0:
                raise RegistryError("MANIFEST_INVALID", f"{what}: every entry needs a size")
        return tuple(out)

    if media_type in INDEX_TYPES:
        return Manifest(media_type, (), digests(doc.get("manifests"), "manifests"))
    if "config" not in doc:
        raise RegistryError("MANIFEST_INVALID", "image manifest has no config")
    config = digests([doc["config"]], "config")
    layers = digests(doc.get("layers", []), "layers")
    return Manifest(media_type, config + layers, ())

