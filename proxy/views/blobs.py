"""GET|HEAD /v2/<name>/blobs/<digest>: streamed from the origin ring, Range honoured."""

from __future__ import annotations

import logging

from flask import Response, current_app, request, stream_with_context

from common.errors import NotFound, Pending, Unavailable
from common.oci import RegistryError, parse_digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def stat(name: str, digest) -> int:
    """The blob's size; BLOB_UNKNOWN when no origin has it."""
    try:
        return current_app.extensions["origins"].stat(name, digest)
    except NotFound:
        raise RegistryError("BLOB_UNKNOWN", detail=str(digest)) from None
    except Unavailable as exc:
        # `docker push` HEADs every blob before uploading it. An origin lacking the blob asks
        # the storage backend, and a backend that is down makes that a 5xx, which would fail
        # the push although the origins (and the write-back queue) can take the upload. As
        # Kraken's proxy does, a HEAD then answers "unknown" and the client uploads the blob
        # again; a GET still says the truth (503).
        if request.method == "HEAD":
            log.info("HEAD %s: origins unavailable, answering BLOB_UNKNOWN: %s", digest, exc)
            raise RegistryError("BLOB_UNKNOWN", detail=str(digest)) from None
        raise
    except Pending:
        raise RegistryError("UNAVAILABLE", "blob is being fetched from storage; retry", detail=str(digest),
                            headers={"Retry-After": "1"}) from None


def get(name: str, digest: str):
    d = parse_digest(digest)
    size = stat(name, d)
    headers = {
        "Docker-Content-Digest": str(d), "Accept-Ranges": "bytes", "ETag": f'"{d}"',
        "Cache-Control": "max-age=31536000",
    }
    start, end, status = 0, size, 200
    if request.range is not None and request.range.units == "bytes":
        span = request.range.range_for_length(size)
        if span is None:
            if len(request.range.ranges) == 1:
                raise RegistryError("RANGE_INVALID", f"range not satisfiable for {size} bytes",
                                    headers={"Content-Range": f"bytes */{size}"})
            # Several ranges: answer with the whole blob, as a server may.
        else:
            start, end, status = span[0], span[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD" or end == start:
        return Response(status=status, headers=headers, mimetype="application/octet-stream")
    origins = current_app.extensions["origins"]
    try:
        if status == 206:
            upstream = origins.download_range(name, d, start, end)
        else:
            upstream = origins.download(name, d)
    except NotFound:
        raise RegistryError("BLOB_UNKNOWN", detail=str(d)) from None

    # An origin that ignored the Range sent the whole blob: cut the span out here.
    skip = start if upstream.status_code == 200 else 0

    def body():
        nonlocal skip
        remaining = end - start
        try:
            for chunk in upstream.iter_content(_CHUNK):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                if remaining < len(chunk):
                    chunk = chunk[:remaining]
                if chunk:
                    remaining -= len(chunk)
                    yield chunk
                if remaining <= 0:
                    break
        finally:
            upstream.close()

    return Response(stream_with_context(body()), status=status, headers=headers,
                    mimetype="application/octet-stream", direct_passthrough=True)


def delete(name: str, digest: str):
    # Like distribution with storage.delete disabled: blobs are shared by every repository
    # and seeded by agents, so they are never deleted through the registry API.
    raise RegistryError("UNSUPPORTED")
