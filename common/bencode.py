"""Bencoding (BEP 3). Keys are bytes; str values are encoded as UTF-8."""

from __future__ import annotations

from common.errors import KrakenError


class BencodeError(KrakenError):
    pass


def encode(value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise BencodeError("booleans have no bencoding")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        items = [(k.encode() if isinstance(k, str) else bytes(k), v) for k, v in value.items()]
        # Keys must be sorted as raw bytes so that the encoding, and so info-hashes, are
        # the same on every host.
        for key, item in sorted(items):
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes):
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as exc:
        raise BencodeError(f"malformed bencoding: {exc}") from None
    if end != len(data):
        raise BencodeError("trailing data after bencoded value")
    return value


def _decode(data: bytes, i: int):
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if c == b"d":
        i += 1
        result = {}
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            result[key], i = _decode(data, i)
        return result, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        length = int(data[i:colon])
        start = colon + 1
        if start + length > len(data):
            raise BencodeError("string runs past the end")
        return data[start : start + length], start + length
    raise BencodeError(f"unexpected byte {c!r} at {i}")
