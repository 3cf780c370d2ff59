"""POST /proxy/v1/registry/prefetch {"tag": "repo:tag"}: warm the origins for a pull."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from common.httputil import HTTPError
from common.oci import RegistryError, check_name

bp = Blueprint("prefetch", __name__)


@bp.post("/proxy/v1/registry/prefetch")
def prefetch():
    doc = request.get_json(silent=True)
    tag = doc.get("tag") if isinstance(doc, dict) else None
    if not isinstance(tag, str) or ":" not in tag:
        raise HTTPError(400, 'want JSON {"tag": "repo:tag"}')
    name, _, reference = tag.rpartition(":")
    if "/" in reference:  # "host:port/repo" without a tag
        raise HTTPError(400, f"{tag!r} has no tag")
    try:
        check_name(name)
        result = current_app.extensions["manifests"].prefetch(name, reference)
    except RegistryError as exc:
        raise HTTPError(exc.status, exc.message, exc.code, exc.detail) from None
    return jsonify({"tag": tag, **result})
