"""One HTTP error type and one handler per app; health, readiness and metrics endpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import unquote

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from common import errors
from common.digest import Digest

log = logging.getLogger(__name__)

# Project exceptions and the status they mean at an HTTP edge.
_STATUS = {
    errors.InvalidDigest: 400,
    errors.DigestMismatch: 400,
    errors.ConfigError: 500,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Rejected: 400,
    errors.Pending: 202,
    errors.Unavailable: 503,
}


class HTTPError(errors.KrakenError):
    def __init__(self, status: int, message: str, code: str | None = None, detail=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.detail = detail


def register_status(cls: type, status: int) -> None:
    """Lets a package map its own exception family to a status (e.g. torrents: 400)."""
    _STATUS[cls] = status


def status_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def install_error_handler(app: Flask) -> None:
    """JSON errors `{"error": message}` for every failure, including Werkzeug's own 404/405,
    so that clients never have to parse HTML."""

    @app.errorhandler(Exception)
    def _handle(exc: Exception):
        if isinstance(exc, HTTPError):
            status, message = exc.status, exc.message
        elif isinstance(exc, HTTPException):
            status, message = exc.code or 500, exc.description
        elif isinstance(exc, errors.KrakenError):
            status, message = status_for(exc), str(exc)
        else:
            log.exception("unhandled error on %s %s", request.method, request.path)
            status, message = 500, "internal error"
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, status, message)
        body = {"error": message}
        if isinstance(exc, HTTPError) and exc.code:
            body["code"] = exc.code
        return jsonify(body), status


def trust_proxies(app: Flask, count: int) -> None:
    """Behind `count` reverse proxies, take the client address from X-Forwarded-For."""
    if count > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)


def parse_digest(value: str) -> Digest:
    """Digest from a URL segment (which may arrive %-escaped), 400 when malformed."""
    try:
        return Digest.parse(unquote(value))
    except errors.InvalidDigest as exc:
        raise HTTPError(400, str(exc), "DIGEST_INVALID") from None


def health_blueprint(checks: dict[str, Callable[[], None]] | None = None, metrics=None) -> Blueprint:
    """`/health` (the process answers), `/readiness` (each named dependency answers; 503 names
    the first that does not) and `/metrics`."""
    bp = Blueprint("health", __name__)
    checks = checks or {}

    @bp.get("/health")
    def health():
        return Response("OK\n", mimetype="text/plain")

    @bp.get("/readiness")
    def readiness():
        for name, check in checks.items():
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                return jsonify({"error": f"{name} not ready: {exc}"}), 503
        return Response("OK\n", mimetype="text/plain")

    if metrics is not None:

        @bp.get("/metrics")
        def metrics_view():
            body, content_type = metrics.render()
            return Response(body, content_type=content_type)

    return bp
