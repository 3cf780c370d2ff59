"""Content digests: `sha256:<64 lowercase hex>`, the only algorithm the registry accepts."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from common.errors import InvalidDigest

_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class Digest:
    hex: str
    algo: str = "sha256"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parses `sha256:<hex>` or bare hex. Upper case and other algorithms are refused
        rather than normalised, so that one blob never has two names."""
        if not isinstance(value, str):
            raise InvalidDigest(f"digest must be a string, not {type(value).__name__}")
        algo, sep, hexpart = value.partition(":")
        if not sep:
            algo, hexpart = "sha256", value
        if algo != "sha256":
            raise InvalidDigest(f"unsupported digest algorithm {algo!r}: only sha256")
        if not _HEX.fullmatch(hexpart):
            raise InvalidDigest(f"invalid digest {value[:80]!r}: want sha256:<64 lowercase hex>")
        return cls(hexpart)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path) -> Digest:
        """Hashes a file. hashlib drops the GIL on large buffers, so calling this from a
        thread pool does not stall a gevent loop."""
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return cls(h.hexdigest())

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"

    @property
    def shard(self) -> str:
        return self.hex[:2]
