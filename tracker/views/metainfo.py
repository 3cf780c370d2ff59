"""The .torrent for a blob: from the Redis cache, else from the origin ring (then cached).
Its announce URL names this tracker so a standard client can use the file as it is."""

from __future__ import annotations

import logging
import time

import gevent
from flask import Blueprint, Response, current_app, request

from common.errors import KrakenError
from common.httputil import parse_digest, register_status
from torrents.metainfo import Metainfo, MetainfoError
from tracker.client import SEEDS_HEADER, SLOT_HEADER

register_status(MetainfoError, 400)

log = logging.getLogger(__name__)
bp = Blueprint("metainfo", __name__)


@bp.get("/namespace/<path:namespace>/blobs/<digest>/metainfo")
def metainfo(namespace: str, digest: str):
    d = parse_digest(digest)
    cache = current_app.extensions["metainfo_cache"]
    info = cache.get(d.hex)
    if info is not None:
        meta = Metainfo(info)
        current_app.extensions["metrics_metainfo"].labels("hit").inc()
    else:
        # Raises NotFound (404), Pending (202) or Unavailable (503), which the error
        # handler turns into those statuses.
        torrent = current_app.extensions["origins"].get_metainfo(namespace, d)
        meta = Metainfo.from_torrent(torrent, expect=d)
        cache.put(d.hex, meta.infohash_hex, meta.info)
        current_app.extensions["metrics_metainfo"].labels("miss").inc()
    cfg = current_app.config["KRAKEN"]
    announce = cfg.public_url.rstrip("/") + "/announce" if cfg.public_url else request.host_url + "announce"
    resp = Response(meta.torrent(announce=announce), mimetype="application/x-bittorrent")
    if request.args.get("slot") == "1":
        # An agent about to download: its place in this torrent's wave (agent.stripes).
        # Best effort: without it the agent falls back to libtorrent's own piece order.
        try:
            resp.headers[SLOT_HEADER] = str(current_app.extensions["peer_store"].next_slot(meta.infohash))
        except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not fail the metainfo
            log.warning("no download slot for %s: %s", d, exc)
    want_seeds = request.args.get("seeds") == "1"
    # A hit nudges the origins, at most every NUDGE_INTERVAL s per blob (_nudge_origins).
    nudge = info is not None and _nudge_due(d)
    # The live origins seeding the blob: named to an agent about to download, and what
    # decides how soon a due nudge goes. Read only when one of them needs it.
    seeds = None
    if want_seeds or nudge:
        # Best effort: without them the agent finds the origins through its announce, and
        # the origins are nudged at once.
        try:
            seeds = current_app.extensions["peer_store"].seeding_origins(meta.infohash, MAX_SEEDS)
        except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not fail the metainfo
            log.warning("no seeds for %s: %s", d, exc)
    if want_seeds and seeds is not None:
        resp.headers[SEEDS_HEADER] = ",".join(f"[{p.ip}]:{p.port}" if ":" in p.ip else f"{p.ip}:{p.port}"
                                              for p in seeds)
    if nudge:
        # Last: the nudge's greenlet runs at this worker's next wait on I/O, which was the
        # slot's or the seeds' Redis call, putting its requests to the origins ahead of
        # this answer. Now it runs once the answer is on its way.
        held = seeds is not None and len(seeds) >= min(current_app.extensions["origins"].ring.replicas, MAX_SEEDS)
        _nudge_origins(namespace, d, delay=NUDGE_DELAY if held else 0)
    return resp


# Origins named to an agent with a blob's metainfo (a blob lives on `replicas` of them).
MAX_SEEDS = 8


# Digest -> when its origins were last nudged, per worker.
_nudged: dict = {}
NUDGE_INTERVAL = 10.0
# Seconds a nudge waits while as many origins as the ring has replicas seed the blob
# (_nudge_origins): past a small blob's download, and well within a large one's stall timeout.
NUDGE_DELAY = 2.0


def _nudge_due(d) -> bool:
    """Whether blob `d`'s origins are due a nudge (none in the last NUDGE_INTERVAL s from
    this worker); if so, counts it as sent."""
    now = time.monotonic()
    if now - _nudged.get(d, -NUDGE_INTERVAL) < NUDGE_INTERVAL:
        return False
    if len(_nudged) > 50_000:
        _nudged.clear()
    _nudged[d] = now
    return True


def _nudge_origins(namespace: str, d, delay: float = 0) -> None:
    """A cached metainfo says nothing about whether any origin still holds the blob: after
    origin data loss the swarm would have no seed. So, as Kraken's tracker asks the origin
    ring on announces, a hit also asks the origins to prefetch (in the background, at most
    every NUDGE_INTERVAL s per blob, _nudge_due): an origin that lost the blob fetches it from the
    storage backend and seeds it; one that has it just keeps seeding (and announces).

    While as many live origins as the ring has replicas announce the blob complete, the
    nudge waits NUDGE_DELAY s: its two prefetch requests, and the two announces they set
    off, cost the tracker and the origins about 10 ms of CPU, which landed in the middle of
    the first agent's download of the blob. It is not dropped: a listed origin may have
    restarted with an empty disk, and its entry outlives it until it expires (peer_ttl).
    Cold 1 MiB through an agent, median of per-blob ratios to a direct GET, five
    alternating pairs of runs: 5.16-5.73 deferred against 5.34-6.01 at once (4 of 5 pairs
    lower, by 0.24 on average; the host's speed moved every figure by more)."""
    origins = current_app.extensions["origins"]

    def nudge():
        try:
            origins.prefetch(namespace, d)
        except KrakenError as exc:
            log.debug("prefetch of %s on the origins: %s", d, exc)

    gevent.spawn_later(delay, nudge)


@bp.put("/internal/namespace/<path:namespace>/blobs/<digest>/metainfo")
def warm(namespace: str, digest: str):
    """An origin hands over the metainfo of a blob it just committed, so the first agent
    to ask finds it cached instead of waiting for a round trip to the origin ring. The
    torrent must describe `digest`; even so, an agent trusts only the blob's sha256."""
    d = parse_digest(digest)
    meta = Metainfo.from_torrent(request.get_data(), expect=d)
    current_app.extensions["metainfo_cache"].put(d.hex, meta.infohash_hex, meta.info)
    return Response(status=204)
