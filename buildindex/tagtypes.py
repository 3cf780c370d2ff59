"""Tag types, as Kraken has them: a rule maps `repo:tag` to a type, and the type decides
what a digest must satisfy before the tag may point at it.

`docker`: the digest is an image manifest (or index) already in the origin ring, and so is
everything it refers to, so that a pull that resolves the tag never meets a missing blob.
`default`: any digest.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from common import oci
from common.digest import Digest
from common.errors import NotFound, Pending, Rejected, Unavailable

log = logging.getLogger(__name__)

# Missing blobs named in one refusal; a manifest may list hundreds.
_NAMED = 5


class DefaultTagType:
    name = "default"

    def check(self, repo: str, tag: str, digest: Digest) -> None:
        return None


class DockerTagType:
    """`origins` is anything with stat(namespace, digest) and download(namespace, digest)
    (origin.client.ClusterClient); the namespace is the repository name."""

    name = "docker"

    def __init__(self, origins, pending_timeout: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.origins = origins
        self.pending_timeout = pending_timeout
        self._sleep = sleep
        self._clock = clock

    def check(self, repo: str, tag: str, digest: Digest) -> None:
        """Raises Rejected (400) naming what is missing, Unavailable (503) when the ring
        cannot tell."""
        if self.origins is None:
            raise Unavailable("no origin ring is configured to check docker tags against")
        manifest = self._manifest(repo, digest, f"{repo}:{tag}")
        missing: list[str] = []
        if manifest.is_index:
            # Each platform's manifest must be there and complete too: a client picks one.
            for child in manifest.manifests:
                try:
                    sub = self._manifest(repo, child, f"{repo}:{tag}")
                except Rejected as exc:
                    missing.append(f"manifest {child} ({exc})")
                    continue
                if sub.is_index:
                    continue  # Nested indexes are rare; their own push checked them.
                missing += self._missing_blobs(repo, sub.blobs)
        else:
            missing = self._missing_blobs(repo, manifest.blobs)
        if missing:
            more = f" and {len(missing) - _NAMED} more" if len(missing) > _NAMED else ""
            raise Rejected(
                f"tag {repo}:{tag} -> {digest}: not in the origin ring: {', '.join(missing[:_NAMED])}{more}"
            )

    def _manifest(self, repo: str, digest: Digest, what: str) -> oci.Manifest:
        body = self._download(repo, digest, what)
        try:
            return oci.parse_manifest(body)
        except oci.RegistryError as exc:
            raise Rejected(f"{digest} is not a usable image manifest: {exc.message}") from None

    def _download(self, repo: str, digest: Digest, what: str) -> bytes:
        deadline = self._clock() + self.pending_timeout
        while True:
            try:
                resp = self.origins.download(repo, digest)
                break
            except NotFound:
                raise Rejected(f"{what}: manifest {digest} is not in the origin ring") from None
            except Pending:
                # An origin is fetching it from its storage backend: worth a short wait.
                if self._clock() >= deadline:
                    raise Unavailable(
                        f"{what}: manifest {digest} is still being fetched by an origin"
                    ) from None
                self._sleep(0.25)
        try:
            body = bytearray()
            for chunk in resp.iter_content(64 << 10):
                body += chunk
                if len(body) > oci.MAX_MANIFEST_BYTES:
                    raise Rejected(f"{what}: {digest} is larger than a manifest may be")
        except OSError as exc:
            raise Unavailable(f"{what}: reading manifest {digest} from an origin failed: {exc}") from None
        finally:
            resp.close()
        if Digest.of_bytes(bytes(body)) != digest:
            raise Unavailable(f"{what}: an origin served content that does not match {digest}")
        return bytes(body)

    def _missing_blobs(self, repo: str, blobs) -> list[str]:
        missing = []
        for blob in dict.fromkeys(blobs):
            try:
                self.origins.stat(repo, blob)
            except Pending:
                pass  # In an origin's storage backend, on its way to disk: it exists.
            except NotFound:
                missing.append(f"blob {blob}")
        return missing


class TagTypes:
    """Rules in order; the first whose pattern matches `repo:tag` decides."""

    def __init__(self, rules: list[tuple[str, object]], fallback):
        self.rules = [(re.compile(pattern), kind) for pattern, kind in rules]
        self.fallback = fallback

    def for_tag(self, repo: str, tag: str):
        name = f"{repo}:{tag}"
        for pattern, kind in self.rules:
            if pattern.search(name):
                return kind
        return self.fallback
