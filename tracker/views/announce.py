"""BEP 3 announce with BEP 23 compact peers, BEP 7 IPv6 peers and BEP 48 scrape."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request

from common import bencode
from tracker import handout
from tracker.peerstore import PeerInfo

bp = Blueprint("announce", __name__)


class AnnounceError(Exception):
    pass


def _query() -> dict[str, list[bytes]]:
    """The raw query: info_hash and peer_id are binary, so they must not be decoded as
    text the way Flask's request.args would."""
    out: dict[str, list[bytes]] = {}
    qs = request.query_string.decode("latin-1")
    for key, value in parse_qsl(qs, keep_blank_values=True, encoding="latin-1"):
        out.setdefault(key, []).append(value.encode("latin-1"))
    return out


def _one(q: dict, key: str, default: bytes | None = None) -> bytes:
    values = q.get(key)
    if not values:
        if default is None:
            raise AnnounceError(f"missing {key}")
        return default
    return values[0]


def _int(q: dict, key: str, default: int | None = None, lo: int = 0, hi: int = 2**63) -> int:
    raw = _one(q, key, None if default is None else str(default).encode())
    try:
        value = int(raw)
    except ValueError:
        raise AnnounceError(f"{key} must be an integer") from None
    if not lo <= value <= hi:
        raise AnnounceError(f"{key} out of range")
    return value


def _failure(reason: str) -> Response:
    return Response(bencode.encode({"failure reason": reason}), status=400, mimetype="text/plain")


def _peer_ip(q: dict) -> str:
    # A client may name its address (`ip=`, BEP 3): agents bound to one of several local
    # addresses do. Otherwise the source address, as standard clients such as aria2c expect.
    raw = q.get("ip")
    if raw:
        try:
            return str(ipaddress.ip_address(raw[0].decode()))
        except (ValueError, UnicodeDecodeError):
            pass
    return request.remote_addr or "127.0.0.1"


@bp.get("/announce")
def announce():
    cfg = current_app.config["KRAKEN"].announce
    store = current_app.extensions["peer_store"]
    try:
        q = _query()
        infohash = _one(q, "info_hash")
        peer_id = _one(q, "peer_id")
        if len(infohash) != 20:
            raise AnnounceError("info_hash must be 20 bytes")
        if len(peer_id) != 20:
            raise AnnounceError("peer_id must be 20 bytes")
        port = _int(q, "port", lo=1, hi=65535)
        left = _int(q, "left", default=1)
        numwant = min(_int(q, "numwant", default=cfg.numwant_default), cfg.numwant_max)
        event = _one(q, "event", b"").decode("latin-1")
        compact = _one(q, "compact", b"1") != b"0"
        text = {k: _one(q, k, b"").decode("utf-8", "replace")[:64] for k in ("zone", "rack", "region")}
    except AnnounceError as exc:
        return _failure(str(exc))

    me = PeerInfo(
        peer_id=peer_id, ip=_peer_ip(q), port=port, complete=left == 0,
        origin=_one(q, "origin", b"0") == b"1", **text,
    )
    if event == "stopped":
        store.remove(infohash, peer_id)
        peers, counts = [], store.counts(infohash)
    else:
        # A bounded pool, so an announce costs the same in a swarm of ten or of ten thousand.
        joined, pool, counts = store.announce(infohash, me, max(cfg.handout_pool, numwant),
                                              completed=event == "completed")
        peers = handout.order(pool, replace(me, joined=joined), numwant, origins_only=cfg.origins_only)
    current_app.extensions["metrics_announces"].labels(event or "update").inc()

    body: dict = {
        "interval": cfg.interval,
        "min interval": cfg.min_interval,
        "complete": counts.complete,
        "incomplete": counts.incomplete,
    }
    if compact:
        v4, v6 = bytearray(), bytearray()
        for p in peers:
            if ":" in p.ip:
                v6 += socket.inet_pton(socket.AF_INET6, p.ip) + p.port.to_bytes(2, "big")
            else:
                v4 += socket.inet_aton(p.ip) + p.port.to_bytes(2, "big")
        body["peers"] = bytes(v4)
        if v6:
            body["peers6"] = bytes(v6)
    else:
        no_peer_id = _one(q, "no_peer_id", b"0") == b"1"
        body["peers"] = [
            {"ip": p.ip, "port": p.port, **({} if no_peer_id else {"peer id": p.peer_id})} for p in peers
        ]
    return Response(bencode.encode(body), mimetype="text/plain")


@bp.get("/scrape")
def scrape():
    store = current_app.extensions["peer_store"]
    hashes = _query().get("info_hash", [])
    if any(len(h) != 20 for h in hashes):
        return _failure("info_hash must be 20 bytes")
    files = {}
    for h in hashes[:100]:
        c = store.counts(h)
        files[h] = {"complete": c.complete, "incomplete": c.incomplete, "downloaded": c.downloaded}
    return Response(bencode.encode({"files": files}), mimetype="text/plain")


# Used by tests and tools that compact-decode peers.
def decode_compact(data: bytes, v6: bool = False) -> list[tuple[str, int]]:
    size = 18 if v6 else 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    return [
        (socket.inet_ntop(family, data[i : i + size - 2]), int.from_bytes(data[i + size - 2 : i + size], "big"))
        for i in range(0, len(data), size)
    ]
