"""Manifests: stored as blobs in the origin ring (namespace = repository), tags in
build-index. A manifest is accepted only when everything it refers to is already in the
ring, so a tag never points at an image that cannot be pulled."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import gevent.pool

from common.digest import Digest
from common.errors import NotFound, Pending, Rejected
from common.oci import (
    MAX_MANIFEST_BYTES,
    Manifest,
    RegistryError,
    check_tag,
    is_digest_reference,
    parse_digest,
    parse_manifest,
)

log = logging.getLogger(__name__)

# Existence checks of one manifest's references run this many at a time.
_PARALLEL = 8


class ManifestStore:
    def __init__(self, origins, build_index, scratch: Callable[[], Path]):
        """`origins`: an origin.client.ClusterClient; `build_index`: a
        buildindex.client.BuildIndexClient; `scratch()`: a path for a temporary file."""
        self.origins = origins
        self.build_index = build_index
        self.scratch = scratch

    # Reading.
    def resolve(self, name: str, reference: str) -> Digest:
        """The digest a tag or digest reference names; MANIFEST_UNKNOWN for an unknown tag."""
        if is_digest_reference(reference):
            return parse_digest(reference)
        if not _valid_tag(reference):
            raise _unknown(name, reference)
        try:
            return self.build_index.get_tag(f"{name}:{reference}")
        except NotFound:
            raise _unknown(name, reference) from None

    def fetch(self, name: str, digest: Digest) -> tuple[bytes, Manifest]:
        """The manifest's bytes as pushed, and what they say; MANIFEST_UNKNOWN when the ring
        has no such blob or the blob is not a manifest."""
        try:
            size = self.origins.stat(name, digest)
            if size > MAX_MANIFEST_BYTES:
                raise _unknown(name, str(digest))
            resp = self.origins.download(name, digest)
        except NotFound:
            raise _unknown(name, str(digest)) from None
        except Pending:
            raise RegistryError("UNAVAILABLE", "manifest is being fetched from storage; retry",
                                headers={"Retry-After": "1"}) from None
        try:
            body = resp.content
        finally:
            resp.close()
        if Digest.of_bytes(body) != digest:
            raise RegistryError("UNAVAILABLE", f"origin returned corrupt content for {digest}")
        try:
            return body, parse_manifest(body)
        except RegistryError:
            raise _unknown(name, str(digest)) from None

    # Writing.
    def put(self, name: str, reference: str, body: bytes, content_type: str | None) -> tuple[Digest, Manifest]:
        manifest = parse_manifest(body, content_type)
        digest = Digest.of_bytes(body)
        tag = None
        if is_digest_reference(reference):
            if parse_digest(reference) != digest:
                raise RegistryError("DIGEST_INVALID", f"manifest digest is {digest}, not {reference}",
                                    detail={"expected": reference, "actual": str(digest)})
        else:
            tag = check_tag(reference)
        missing = self.missing(name, manifest.blobs + manifest.manifests)
        if missing:
            # distribution: one MANIFEST_BLOB_UNKNOWN per missing reference, the digest as
            # detail; for an index, its missing manifests are reported the same way.
            errs = [RegistryError("MANIFEST_BLOB_UNKNOWN", detail=str(d)) for d in missing]
            raise RegistryError("MANIFEST_BLOB_UNKNOWN", detail=str(missing[0]), more=tuple(errs[1:]))
        path = self.scratch()
        try:
            path.write_bytes(body)
            self.origins.upload(name, digest, path)
        finally:
            path.unlink(missing_ok=True)
        if tag is not None:
            try:
                self.build_index.put_tag(f"{name}:{tag}", digest)
            except Rejected as exc:
                # Build-index re-checks docker-type tags against the ring.
                raise RegistryError("MANIFEST_INVALID", f"build-index refused the tag: {exc}") from None
        log.info("manifest %s of %s stored%s", digest, name, f" as tag {tag}" if tag else "")
        return digest, manifest

    def missing(self, name: str, digests: tuple[Digest, ...]) -> list[Digest]:
        """The referenced digests no origin has, in manifest order."""
        unique = list(dict.fromkeys(digests))

        def absent(d: Digest) -> bool:
            try:
                self.origins.stat(name, d)
            except Pending:
                return False
            except NotFound:
                return True
            return False

        flags = list(gevent.pool.Pool(_PARALLEL).imap(absent, unique)) if unique else []
        return [d for d, gone in zip(unique, flags) if gone]

    # Prefetch.
    def prefetch(self, name: str, reference: str) -> dict:
        """Asks the origins to get an image's manifest and blobs ready to seed (an index's
        per-platform manifests too). Returns what was asked."""
        digest = self.resolve(name, reference)
        _, manifest = self.fetch(name, digest)
        blobs: list[Digest] = [digest, *manifest.blobs]
        for child in manifest.manifests:
            blobs.append(child)
            try:
                _, sub = self.fetch(name, child)
            except RegistryError as exc:
                log.warning("prefetch %s:%s: child manifest %s: %s", name, reference, child, exc.message)
                continue
            blobs.extend(sub.blobs)
        unique = list(dict.fromkeys(blobs))
        failed: list[str] = []

        def one(d: Digest) -> None:
            try:
                self.origins.prefetch(name, d)
            except Exception as exc:  # noqa: BLE001 - reported, the rest still warm up
                log.warning("prefetch of %s failed: %s", d, exc)
                failed.append(str(d))

        gevent.pool.Pool(_PARALLEL).map(one, unique)
        return {"digest": str(digest), "blobs": [str(d) for d in unique], "failed": failed}


def _valid_tag(reference: str) -> bool:
    try:
        check_tag(reference)
    except RegistryError:
        return False
    return True


def _unknown(name: str, reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", detail={"name": name, "reference": reference[:200]})
