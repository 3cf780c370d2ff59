"""Where things live inside a backend. Blobs are content-addressed, so their key does not
depend on the namespace; tags are per repository."""

from __future__ import annotations

from common.digest import Digest
from common.errors import InvalidDigest

BLOBS = "blobs/sha256/"
TAGS = "tags/"


def blob(digest: Digest) -> str:
    return f"{BLOBS}{digest.hex[:2]}/{digest.hex}"


def digest_of(key: str) -> Digest:
    if not key.startswith(BLOBS):
        raise InvalidDigest(f"not a blob key: {key!r}")
    return Digest.parse("sha256:" + key.rsplit("/", 1)[-1])


def tag(repo: str, tag_name: str) -> str:
    return f"{TAGS}{repo}/{tag_name}"


def split_tag(key: str) -> tuple[str, str]:
    """(repo, tag) of a tag key."""
    if not key.startswith(TAGS) or "/" not in key[len(TAGS):]:
        raise ValueError(f"not a tag key: {key!r}")
    repo, _, name = key[len(TAGS):].rpartition("/")
    return repo, name


def check(key: str) -> str:
    """Keys are built by this module; still, refuse anything that could leave a root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise ValueError(f"unsafe backend key: {key!r}")
    return key
