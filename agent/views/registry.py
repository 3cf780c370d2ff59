"""The agent registry port: the read side of the OCI distribution spec, served from P2P.

Repository names contain slashes, so everything under /v2/ goes to one view that parses the
rest of the path itself."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from agent.images import NotAManifest
from agent.views.blobs import send_blob
from common import oci
from common.errors import NotFound

bp = Blueprint("registry", __name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
READ = ("GET", "HEAD")
# Largest page of tags one request may ask for.
MAX_TAGS_PAGE = 10000

_MANIFEST = re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB = re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$")
_TAGS = re.compile(r"^(?P<name>.+)/tags/list$")
_UPLOADS = re.compile(r"^.+/blobs/uploads(/.*)?$")


def _check_tag(tag: str) -> str:
    # The distribution grammar is ASCII; the \w of common.oci's pattern is not.
    if not tag.isascii():
        raise oci.RegistryError("TAG_INVALID", f"invalid tag: {tag[:200]!r}", detail={"tag": tag[:200]})
    return oci.check_tag(tag)


def _range_error(message: str) -> Exception:
    return oci.RegistryError("RANGE_INVALID", message)


@bp.after_app_request
def _api_version(response: Response) -> Response:
    response.headers[oci.API_VERSION_HEADER[0]] = oci.API_VERSION_HEADER[1]
    return response


@bp.app_errorhandler(RequestedRangeNotSatisfiable)
def _cached_range(exc: RequestedRangeNotSatisfiable):
    # send_file's own Range handling, for a blob already in the cache.
    headers = {"Content-Range": f"bytes */{exc.length}"} if exc.length is not None else None
    return oci.error_response("RANGE_INVALID", "range not satisfiable", 416, headers=headers)


@bp.route("/v2/", methods=METHODS)
def base():
    if request.method not in READ:
        raise oci.RegistryError("UNSUPPORTED", "this registry is read-only")
    return jsonify({})


@bp.route("/v2/<path:rest>", methods=METHODS)
def dispatch(rest: str):
    if request.method not in READ or _UPLOADS.match(rest):
        raise oci.RegistryError("UNSUPPORTED", "this registry is read-only; push to the proxy")
    if m := _MANIFEST.match(rest):
        return manifest(oci.check_name(m["name"]), m["ref"])
    if m := _BLOB.match(rest):
        return blob(oci.check_name(m["name"]), m["digest"])
    if m := _TAGS.match(rest):
        return tags(oci.check_name(m["name"]))
    raise oci.RegistryError("NAME_UNKNOWN", "no such route", status=404)


def manifest(name: str, reference: str) -> Response:
    images = current_app.extensions["images"]
    if oci.is_digest_reference(reference):
        digest = oci.parse_digest(reference)
    else:
        tag = f"{name}:{_check_tag(reference)}"
        try:
            digest = images.resolve(tag)
        except NotFound:
            raise oci.RegistryError("MANIFEST_UNKNOWN", f"manifest unknown: {tag}",
                                    detail={"name": name, "tag": reference}) from None
    try:
        body, parsed = images.manifest(name, digest)
    except NotAManifest as exc:
        raise oci.RegistryError("MANIFEST_UNKNOWN", str(exc),
                                detail={"name": name, "digest": str(digest)}) from None
    except NotFound:
        raise oci.RegistryError("MANIFEST_UNKNOWN", f"manifest unknown: {name}@{digest}",
                                detail={"name": name, "digest": str(digest)}) from None
    if request.method == "GET" and images.cfg.warm_on_manifest:
        images.warm(name, parsed)
    headers = {"Docker-Content-Digest": str(digest), "ETag": f'"{digest}"'}
    # The body is the blob as stored, byte for byte: its digest is the manifest's.
    return Response(body, headers=headers, content_type=parsed.media_type)


def blob(name: str, digest: str) -> Response:
    d = oci.parse_digest(digest)
    try:
        return send_blob(current_app.extensions["downloader"], name, d, range_error=_range_error)
    except NotFound:
        raise oci.RegistryError("BLOB_UNKNOWN", f"blob unknown: {name}@{d}",
                                detail={"name": name, "digest": str(d)}) from None


def tags(name: str) -> Response:
    n = request.args.get("n")
    last = request.args.get("last", "")
    if last:
        _check_tag(last)
    if n is not None:
        try:
            n = int(n)
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_TAGS_PAGE:
            raise oci.RegistryError("PAGINATION_NUMBER_INVALID", f"n must be 0..{MAX_TAGS_PAGE}",
                                    detail={"n": request.args.get("n")})
    page, more = current_app.extensions["images"].list_tags(name, n, last or None)
    if not page and not last and n != 0:
        raise oci.RegistryError("NAME_UNKNOWN", f"repository {name} has no tags", detail={"name": name})
    headers = {}
    if more and page:
        query = urlencode({"n": n, "last": page[-1]})
        headers["Link"] = f'</v2/{name}/tags/list?{query}>; rel="next"'
    resp = jsonify({"name": name, "tags": page})
    resp.headers.update(headers)
    return resp
