"""Deterministic metainfo: the same blob gives the same info-hash on every host.

The info dictionary holds only what the content determines (name = hex digest, length,
piece length from the size, piece hashes, private flag): no creation date, creator or
comment, and bencoding sorts keys, so two origins build byte-identical bytes. v1 torrents,
because standard clients such as aria2c reject v2-only ones and hash hybrids differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from common import bencode
from common.digest import Digest
from common.errors import KrakenError

MIN_PIECE = 256 << 10
MAX_PIECE = 4 << 20
# Aim for about this many pieces: enough for peers to trade distinct pieces early, few
# enough that the piece-hash list and per-piece overhead stay small.
TARGET_PIECES = 2048


class MetainfoError(KrakenError):
    pass


def piece_length_for(size: int) -> int:
    """A power of two between 256 KiB and 4 MiB. 256 KiB measured best under a per-host cap
    (LIBTORRENT-NOTES); larger blobs grow it so the piece count stays near TARGET_PIECES."""
    length = MIN_PIECE
    while length < MAX_PIECE and size > length * TARGET_PIECES:
        length <<= 1
    return length


@dataclass(frozen=True)
class Metainfo:
    info: bytes  # the bencoded info dictionary, exactly the bytes that are hashed

    @cached_property
    def _fields(self) -> dict:
        return bencode.decode(self.info)

    @cached_property
    def infohash(self) -> bytes:
        return hashlib.sha1(self.info).digest()

    @property
    def infohash_hex(self) -> str:
        return self.infohash.hex()

    @property
    def name(self) -> str:
        return self._fields[b"name"].decode()

    @property
    def length(self) -> int:
        return self._fields[b"length"]

    @property
    def piece_length(self) -> int:
        return self._fields[b"piece length"]

    @property
    def num_pieces(self) -> int:
        return len(self._fields[b"pieces"]) // 20

    def piece_span(self, index: int) -> tuple[int, int]:
        """(offset, length) of piece `index` in the blob."""
        start = index * self.piece_length
        return start, min(self.piece_length, self.length - start)

    def piece_index(self, offset: int) -> int:
        return offset // self.piece_length

    def piece_ok(self, index: int, data: bytes) -> bool:
        """Whether `data` is piece `index` exactly (its SHA-1 from the info dictionary)."""
        return hashlib.sha1(data).digest() == self._fields[b"pieces"][index * 20 : index * 20 + 20]

    @property
    def digest(self) -> Digest:
        return Digest.parse(self.name)

    def torrent(self, announce: str | None = None) -> bytes:
        """The .torrent file. `announce` is outside the info dictionary, so it does not
        change the info-hash: every tracker can name itself."""
        prefix = b"d"
        if announce:
            prefix += bencode.encode("announce") + bencode.encode(announce)
        return prefix + b"4:info" + self.info + b"e"

    @classmethod
    def from_torrent(cls, data: bytes, expect: Digest | None = None) -> Metainfo:
        """Parses a .torrent, keeping the info bytes as they were and checking that it
        describes a single-file blob (and the expected one, if given)."""
        try:
            top = bencode.decode(data)
            info = top[b"info"]
        except (KrakenError, KeyError, TypeError) as exc:
            raise MetainfoError(f"not a torrent: {exc}") from None
        meta = cls(bencode.encode(info))
        try:
            ok = (
                isinstance(info[b"length"], int)
                and info[b"length"] > 0
                and len(info[b"pieces"]) % 20 == 0
                and meta.num_pieces == -(-meta.length // meta.piece_length)
            )
            digest = meta.digest
        except (KrakenError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise MetainfoError(f"not a kraken blob torrent: {exc}") from None
        if not ok:
            raise MetainfoError("torrent length, pieces and piece length disagree")
        if expect is not None and digest != expect:
            raise MetainfoError(f"torrent is for {digest}, expected {expect}")
        return meta


def build(path, digest: Digest, size: int | None = None) -> Metainfo:
    """Hashes the blob at `path` into metainfo. Run it in a thread pool: hashlib drops the
    GIL, so a gevent loop keeps serving meanwhile."""
    import os

    size = os.path.getsize(path) if size is None else size
    if size <= 0:
        raise MetainfoError("an empty blob has no torrent")
    plen = piece_length_for(size)
    pieces = bytearray()
    with open(path, "rb") as f:
        while chunk := f.read(plen):
            pieces += hashlib.sha1(chunk).digest()
    info = {
        "length": size,
        "name": digest.hex,
        "piece length": plen,
        "pieces": bytes(pieces),
        "private": 1,
    }
    return Metainfo(bencode.encode(info))
