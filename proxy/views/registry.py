"""The /v2 router. Repository names contain slashes, so one catch-all route takes the rest
of the path and the suffix (`/blobs/uploads/`, `/blobs/<digest>`, `/manifests/<ref>`,
`/tags/list`) says which resource it is, as distribution's router does."""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, request

from common.oci import API_VERSION_HEADER, RegistryError, check_name
from proxy.views import blobs, manifests, tags, uploads

bp = Blueprint("registry", __name__)

# Longest name first: `.+` is greedy, so a repository may itself contain `blobs` or `tags`.
_ROUTES = (
    (re.compile(r"^(?P<name>.+)/blobs/uploads/?$"), {"POST": uploads.start}),
    (re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<uid>[^/]+)$"), {
        "GET": uploads.status, "HEAD": uploads.status, "PATCH": uploads.patch,
        "PUT": uploads.finish, "DELETE": uploads.cancel,
    }),
    (re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), {
        "GET": blobs.get, "HEAD": blobs.get, "DELETE": blobs.delete,
    }),
    (re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$"), {
        "GET": manifests.get, "HEAD": manifests.get, "PUT": manifests.put, "DELETE": manifests.delete,
    }),
    (re.compile(r"^(?P<name>.+)/tags/list$"), {"GET": tags.list_tags}),
)

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@bp.after_app_request
def _api_version(resp):
    if request.path.startswith("/v2"):
        resp.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
    return resp


@bp.get("/v2/")
def base():
    return jsonify({})


@bp.get("/v2/_catalog")
def catalog():
    return tags.catalog()


@bp.route("/v2/<path:rest>", methods=_METHODS)
def dispatch(rest: str):
    for pattern, methods in _ROUTES:
        m = pattern.match(rest)
        if m is None:
            continue
        args = m.groupdict()
        check_name(args["name"])
        handler = methods.get(request.method)
        if handler is None:
            raise RegistryError("UNSUPPORTED", f"{request.method} is not supported here",
                                headers={"Allow": ", ".join(methods)})
        return handler(**args)
    raise RegistryError("NAME_UNKNOWN", "no such route", status=404, detail={"path": rest[:200]})
