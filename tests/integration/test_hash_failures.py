"""A peer that serves corrupt pieces is dropped; the download completes, verified."""

from __future__ import annotations

import os
import threading
from urllib.parse import quote_from_bytes

import requests

from common.digest import Digest
from tests.integration.badpeer import CorruptPeer
from tests.integration.helpers import agent_url, metric, upload, wait_for
from torrents.metainfo import Metainfo


def test_corrupt_peer_is_dropped_and_pieces_are_fetched_again(cluster, tmp_path):
    data = os.urandom(8 << 20)
    digest = upload(cluster, data, tmp_path)
    tracker = cluster.trackers[0]
    resp = requests.get(f"http://{tracker}/namespace/test/blobs/{digest}/metainfo", timeout=10)
    meta = Metainfo.from_torrent(resp.content, expect=digest)  # now cached by the tracker
    agent = cluster.agents[0]["server"]
    failures_before = metric(agent, "kraken_torrent_hash_failures")
    origins = [n for n in cluster.procs if n.startswith("origin-")]

    with CorruptPeer(meta.infohash, meta.num_pieces) as bad:
        # The bad peer announces itself as a finished peer, so it is handed out first.
        q = (f"info_hash={quote_from_bytes(meta.infohash)}&peer_id={quote_from_bytes(bad.peer_id)}"
             f"&port={bad.addr[1]}&left=0&ip={bad.addr[0]}&event=completed")
        assert requests.get(f"http://{tracker}/announce?{q}", timeout=5).status_code == 200
        # With the origins stopped the bad peer is the only source at first: the agent must
        # receive its garbage, fail the hash checks and drop it.
        for name in origins:
            cluster.pause(name)
        result = {}
        fetch = threading.Thread(target=lambda: result.update(resp=requests.get(agent_url(cluster, 0, digest),
                                                                                 timeout=120)))
        try:
            fetch.start()
            wait_for(lambda: bad.blocks_sent > 0 and metric(agent, "kraken_torrent_hash_failures") > failures_before,
                     30, "a hash failure caused by the corrupt peer")
            # Still no good source, so a closed connection means the agent dropped the peer.
            wait_for(lambda: bad.closed_by_peer >= 1, 30, "the agent to drop the corrupt peer")
            assert "resp" not in result
        finally:
            for name in origins:
                cluster.resume(name)
        fetch.join(120)
        assert result["resp"].status_code == 200
        assert Digest.of_bytes(result["resp"].content) == digest
        # libtorrent may try the peer again after dropping it, but never as a real source:
        # it served far fewer blocks than the blob has (16 KiB each). (How many it sent
        # before the first hash check failed depends on how many requests libtorrent had
        # queued by then, about a second's worth, more on a busy host: half the blob is
        # the bound, not a quarter.)
        assert bad.blocks_sent < len(data) // (16 << 10) // 2
