"""The agent server port: tags (through build-index) and image preloads."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from agent.images import split_tag
from common.httputil import HTTPError

bp = Blueprint("tags", __name__)


def _tag(tag: str) -> str:
    try:
        split_tag(tag)
    except ValueError as exc:
        raise HTTPError(400, str(exc), "TAG_INVALID") from None
    return tag


@bp.get("/tags/<path:tag>")
def get_tag(tag: str):
    """`repo:tag` -> its digest as text; 404 when build-index does not know the tag."""
    digest = current_app.extensions["images"].resolve(_tag(tag))
    return Response(str(digest), mimetype="text/plain")


@bp.post("/preload/tags/<path:tag>")
def preload(tag: str):
    """Fetches the image's manifest and blobs in the background, ahead of a pull: 202 once
    the tag is resolved (404 when unknown)."""
    digest = current_app.extensions["images"].preload(_tag(tag))
    return jsonify({"tag": tag, "digest": str(digest)}), 202
