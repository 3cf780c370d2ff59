"""Client for the trackers' metainfo endpoint, failing over between trackers."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote, urlencode

import urllib3

from common.digest import Digest
from common.errors import NotFound, Pending, Unavailable
from common.ring import HealthTracker
from torrents.metainfo import Metainfo, MetainfoError

SLOT_HEADER = "X-Kraken-Piece-Slot"
# The origins seeding the blob, "ip:port" comma-separated ("[ip]:port" for IPv6): an agent
# dials them as it starts, without waiting for its first announce's reply.
SEEDS_HEADER = "X-Kraken-Seeds"


class ForDownload(NamedTuple):
    meta: Metainfo
    slot: int | None  # this download's place in the torrent's wave (agent.stripes)
    seeds: list[tuple[str, int]]  # origins seeding it, as the tracker knew them


def parse_seeds(raw: str) -> list[tuple[str, int]]:
    """The SEEDS_HEADER value; what does not parse is left out."""
    seeds = []
    for item in raw.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            seeds.append((host, int(port)))
    return seeds


class TrackerClient:
    def __init__(self, trackers: list[str], timeout=(2, 30)):
        if not trackers:
            raise ValueError("at least one tracker is needed")
        self.trackers = list(trackers)
        # urllib3 itself rather than requests over it: a metainfo GET is on the path of
        # every cold fetch, and requests' layers cost 1.0 ms more of the agent's CPU per
        # call (1.36 against 0.32 ms; wall 2.2 against 1.2 ms, same tracker).
        self.http = urllib3.PoolManager(maxsize=16, retries=False)
        self.timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        # Trackers that failed lately are asked last (passive health), so one dead tracker
        # costs a failed request now and then, not one per download.
        self.health = HealthTracker(fail_threshold=1, cooldown=30.0)

    def _ordered(self) -> list[str]:
        return sorted(self.trackers, key=lambda t: not self.health.healthy(t))

    def ping(self) -> None:
        """Raises unless some tracker answers /health (agent readiness)."""
        errors = []
        for addr in self.trackers:
            try:
                if self.http.request("GET", f"http://{addr}/health", timeout=urllib3.Timeout(1, 2)).status == 200:
                    return
                errors.append(f"{addr}: unhealthy")
            except urllib3.exceptions.HTTPError as exc:
                errors.append(f"{addr}: {exc.__class__.__name__}")
        raise Unavailable("no tracker answers: " + "; ".join(errors))

    def put_metainfo(self, namespace: str, digest: Digest, torrent: bytes) -> int:
        """Warms every tracker's metainfo cache; returns how many accepted. Best effort:
        a tracker that misses it fetches from the origins when first asked."""
        ok = 0
        for addr in self.trackers:
            url = f"http://{addr}/internal/namespace/{quote(namespace, safe='')}/blobs/{digest}/metainfo"
            try:
                ok += self.http.request("PUT", url, body=torrent, timeout=self.timeout).status == 204
            except urllib3.exceptions.HTTPError:
                pass
        return ok

    def get_metainfo(self, namespace: str, digest: Digest) -> Metainfo:
        """Raises NotFound (no origin has it), Pending (an origin is fetching it) or
        Unavailable (no tracker answered)."""
        return self.metainfo_for_download(namespace, digest, slot=False, seeds=False).meta

    def metainfo_for_download(self, namespace: str, digest: Digest, *, slot: bool = True,
                              seeds: bool = True) -> ForDownload:
        """The metainfo, with `slot` this download's place in the torrent's wave (None from
        a tracker that gives none), with `seeds` the origins seeding it (empty if the
        tracker knows none). Raises as get_metainfo."""
        errors = []
        query = urlencode({k: "1" for k, wanted in (("slot", slot), ("seeds", seeds)) if wanted})
        for addr in self._ordered():
            url = f"http://{addr}/namespace/{quote(namespace, safe='')}/blobs/{digest}/metainfo"
            try:
                resp = self.http.request("GET", f"{url}?{query}" if query else url, timeout=self.timeout)
            except urllib3.exceptions.HTTPError as exc:
                self.health.failed(addr)
                errors.append(f"{addr}: {exc}")
                continue
            if resp.status < 500:
                self.health.succeeded(addr)
            else:
                self.health.failed(addr)
            if resp.status == 200:
                try:
                    meta = Metainfo.from_torrent(resp.data, expect=digest)
                except MetainfoError as exc:
                    errors.append(f"{addr}: {exc}")
                    continue
                raw = resp.headers.get(SLOT_HEADER, "")
                return ForDownload(meta, int(raw) if raw.isdigit() else None,
                                   parse_seeds(resp.headers.get(SEEDS_HEADER, "")))
            if resp.status == 404:
                raise NotFound(f"blob {digest} not found")
            if resp.status == 202:
                raise Pending(f"blob {digest} is being fetched by an origin")
            errors.append(f"{addr}: HTTP {resp.status} {resp.data[:200].decode('utf-8', 'replace')}")
        raise Unavailable(f"no tracker could give metainfo for {digest}: {'; '.join(errors)}")
