"""The libtorrent settings a session runs with, and why (measurements in LIBTORRENT-NOTES,
the README's Performance section and tests/bench/PERFORMANCE-HISTORY.md)."""

from __future__ import annotations

import libtorrent as lt

from torrents.config import TorrentConfig

_ALERTS = (
    lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage
    | lt.alert_category.piece_progress  # piece_finished_alert: streaming serves pieces as they pass
    | lt.alert_category.connect  # peer_connect_alert: new sockets get TCP_NODELAY
)


def session_settings(cfg: TorrentConfig, user_agent: str) -> dict:
    """libtorrent's settings_pack for a session with this config."""
    settings = {
        # A private swarm on known hosts: no discovery beyond the tracker.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "listen_interfaces": f"{cfg.listen_ip}:{cfg.port}",
        # Without this a session on 127.0.0.12 still connects out from 127.0.0.1, and peers
        # would see (and the tracker record) the wrong address.
        "outgoing_interfaces": cfg.listen_ip,
        "announce_ip": cfg.listen_ip,
        "alert_mask": int(_ALERTS),
        "alert_queue_size": 10000,
        "user_agent": user_agent,
        "upload_rate_limit": cfg.upload_rate_limit,
        "download_rate_limit": cfg.download_rate_limit,
        "connections_limit": cfg.connections_limit,
        "min_announce_interval": cfg.min_announce_interval,
        # TCP only: uTP added 0.5-1 s per torrent here and has its own congestion control
        # that fights the rate limiter.
        # The IP filter drops a torrent's peers at an origin's address (TorrentSession.shun),
        # never its tracker, which may share that address.
        "apply_ip_filter_to_trackers": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Several hosts may share an address behind NAT.
        "allow_multiple_connections_per_ip": True,
        # Shutdown must not wait 5 s on a tracker that is gone.
        "stop_tracker_timeout": 1,
        # Measured under a per-host cap (LIBTORRENT-NOTES): hand out rate quota every
        # tick_ms (50) instead of 500 ms (bursty transfers, slow first piece; a fresh capped
        # session starts with shorter ticks still, see fresh_tick); do not queue whole
        # pieces at one peer (it doubles what a capped seeder sends); keep about one second
        # of requests in flight.
        "tick_interval": fresh_tick(cfg) or cfg.tick_ms,
        "whole_pieces_threshold": 0,
        "request_queue_time": 1,
        "max_allowed_in_request_queue": cfg.max_peer_requests,
        "aio_threads": cfg.disk_threads,
        "unchoke_slots_limit": cfg.unchoke_slots,
        "close_redundant_connections": cfg.close_redundant_connections,
        # libtorrent picks the first 4 pieces at random, ignoring piece priorities; that
        # breaks the stripes of a wave (agent.stripes): each agent's 4 random pieces were
        # also on another agent's stripe, and the origin sent both.
        "initial_picker_threshold": 0,
    }
    if cfg.read_ahead_bytes and not cfg.upload_rate_limit:
        # By default a peer's next blocks are read only while less than 10 KiB waits to be
        # sent to it (more once its upload rate is known). Under a cap blocks wait for
        # quota, not for the disk. Measured in OriginTorrentConfig.
        settings["send_buffer_low_watermark"] = cfg.read_ahead_bytes
    settings.update(cfg.settings)
    return settings


# A fresh session's rate limiter has no quota banked: libtorrent grants bandwidth at once
# only while its channel holds more than a second of quota, and banks quota only at ticks
# while requests wait. So at first every request, handshakes included, waits for a tick
# while new connections ask for a few blocks at a time, and the first piece of a blob took
# over a second at 8 MiB/s (time to first byte 1.14-1.16 s with 50 ms ticks, 0.49 s with
# 20, 0.38 s with 10). Ticks that short all along cost CPU in a busy swarm (N=20, 256 MiB
# at 8 MiB/s: 0.852 against 0.865 with 10 ms, agent CPU 3.1 against 2.6 s), so a capped
# session ticks every fresh_tick_ms only until it has moved RAMP_SECONDS of its cap. That
# is what a node added to a fleet pulls its first image with.
RAMP_SECONDS = 2


def fresh_tick(cfg: TorrentConfig) -> int:
    """The tick to start with, or 0 for the usual one from the start."""
    capped = cfg.upload_rate_limit > 0 or cfg.download_rate_limit > 0
    return cfg.fresh_tick_ms if capped and "tick_interval" not in cfg.settings else 0


def ramp_bytes(cfg: TorrentConfig) -> int:
    """Payload after which a session that started with the fresh tick goes on to tick_ms
    (0: it starts with tick_ms)."""
    return RAMP_SECONDS * max(cfg.upload_rate_limit, cfg.download_rate_limit) if fresh_tick(cfg) else 0
