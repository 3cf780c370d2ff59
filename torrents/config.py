"""Settings for one libtorrent session (one per agent or origin process)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TorrentConfig:
    # Address and port peers reach this host on. Port 0 lets the OS choose (tests).
    listen_ip: str = "127.0.0.1"
    port: int = 0
    # Per-session caps in bytes per second, 0 = unlimited. They apply to LAN and loopback
    # peers too (libtorrent exempts those unless told otherwise).
    upload_rate_limit: int = 0
    download_rate_limit: int = 0
    connections_limit: int = 400
    # Seconds between announces; libtorrent otherwise clamps the tracker's interval to 300.
    min_announce_interval: int = 15
    # How often progress is polled from libtorrent (seconds).
    progress_interval: float = 0.5
    # Seed in BitTorrent super-seeding mode (reveal pieces one at a time, so each is sent
    # once); for origins, measured in the swarm benchmark.
    super_seeding: bool = False
    # Requests one peer may have outstanding at this host (libtorrent's
    # max_allowed_in_request_queue). Origins keep it small: see OriginTorrentConfig.
    max_peer_requests: int = 2000
    # Turn Nagle's algorithm off on peer connections (see sockets.set_nodelay): small
    # transfers otherwise stall 40 ms on delayed ACKs.
    tcp_nodelay: bool = True
    # libtorrent's disk I/O threads (aio_threads; its default is 10). Agents keep 10: a lone
    # agent's cold docker pull took 2.06-2.12 s with 10 against 2.19-2.27 s with 2 and 2.21 s
    # with 4; an unlimited 20-agent swarm on two cores delivered 8-20 % more with 2 (fewer
    # thread wake-ups). Origins use 1 (OriginTorrentConfig).
    disk_threads: int = 10
    # Read every block a peer asked for from disk at once, when this session has no upload
    # cap (libtorrent's send_buffer_low_watermark, in bytes; 0: its default of 10 KiB,
    # which reads a fresh connection's next block only once the one before is nearly
    # sent). Origins do: see OriginTorrentConfig.
    read_ahead_bytes: int = 0
    # Peers uploaded to at once (libtorrent's unchoke_slots_limit, whose default is 8; -1:
    # every interested peer, at an equal share each). All, on every host: a private swarm
    # has no free riders to choke. For agents, each agent's stripe (agent.stripes) then
    # goes straight to every other agent of its wave rather than to 8 of them and on from
    # there. Measured (swarm benchmark, fraction p50, alternating runs): N=20, S=256 MiB
    # 0.806, 0.804, 0.808, 0.781 against 0.767, 0.793, 0.808, 0.760 with 8 (a slow hour,
    # both cores busy); N=10, S=64 MiB 0.887, 0.880, 0.878 against 0.849, 0.878, 0.619; N=10,
    # S=256 MiB (9 peers: 8 slots and the optimistic one are every peer already) 0.923,
    # 0.924, 0.901 against 0.916, 0.920, 0.919; tc-shaped, N=20 0.645, 0.642 against 0.635,
    # 0.623, N=10, S=64 MiB mean 0.751 against 0.752 (5 pairs); no cap, N=20: 163.5 and
    # 171.4 MiB/s against 151.0 and 161.0. For origins: with 8 slots, 8 of 10 agents
    # got about 10 MiB of a 64 MiB blob from the origin and 2 about 1 MiB, so the 8 ran past
    # their stripes into pieces others were fetching.
    unchoke_slots: int = -1
    # libtorrent's tick (ms): every tick_ms, or every fresh_tick_ms while a capped session is
    # fresh (torrents.settings.RAMP_SECONDS; 0 keeps tick_ms throughout). Under a cap it is
    # how often rate quota is handed out. 50 on every host; measured against it
    # (tests/bench/PERFORMANCE-HISTORY.md, session 21): 100 on capped hosts lost a second on
    # a 64 MiB blob (N=10); 25 on origins gained 0.2 s there (p50 0.876 against 0.859) but an
    # agent's next blob then began 0.2 s later (first byte 0.27-0.29 s against 0.03-0.11 s),
    # and a cold 1 MiB fetch took 1 ms longer; 25 on every host cost CPU in a big swarm.
    tick_ms: int = 50
    fresh_tick_ms: int = 10
    # Hang up on a peer once neither end needs the other (libtorrent's
    # close_redundant_connections). Off, for agents: libtorrent 2.0-2.1 hangs up on a peer
    # whose HAVE completes its blob (it turned seed) before looking at whether that piece
    # is one this end still lacks (peer_connection::incoming_have), so when an agent got
    # the last piece of its stripe from the origin, every agent still missing that piece
    # dropped it. They waited for the origins (readmitted after agent.downloader's
    # ORIGIN_WINDOW), and the blob came 1.5-3 s late (N=10, 256 MiB at 8 MiB/s: the
    # clients' last byte 2-3 s after the swarm's last block). Connections no end needs
    # then stay open until libtorrent's inactivity_timeout (10 min), which it enforces as
    # the session nears connections_limit. Origins only seed: OriginTorrentConfig.
    close_redundant_connections: bool = False
    # Raw libtorrent settings_pack overrides, for tuning without a code change.
    settings: dict = field(default_factory=dict)
