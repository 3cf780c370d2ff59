"""A libtorrent session that lives inside a gevent worker.

libtorrent runs its own native threads; this wrapper only has to avoid blocking the gevent
loop while waiting for them. Alerts are signalled through a pipe (`set_alert_fd`) that a
greenlet waits on with a gevent watcher, never with `wait_for_alert`, which holds the OS
thread (measured: up to 1.9 s stalls, LIBTORRENT-NOTES). Progress comes from
`post_torrent_updates`, which costs no round trip per torrent.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import gevent
import gevent.event
import libtorrent as lt

from common.concurrency import in_thread
from common.errors import DownloadError, NotFound
from torrents.config import TorrentConfig
from torrents.metainfo import Metainfo
from torrents.settings import ramp_bytes, session_settings
from torrents.sockets import set_nodelay
from torrents.state import Progress, Torrent

log = logging.getLogger(__name__)

# Alerts after which the process has TCP sockets that may still have Nagle's algorithm on.
_NEW_SOCKETS = (lt.listen_succeeded_alert, lt.peer_connect_alert)
# Seconds between looks for a torrent being added whose add_torrent_alert has not come (it
# may have been dropped with others when the alert queue overflowed).
ADD_WAIT = 1.0


class TorrentSession:
    """download / seed / move / remove / progress / stop, keyed by info-hash hex."""

    def __init__(self, cfg: TorrentConfig, *, trackers: list[str], user_agent: str = "kraken-p2p/0.1"):
        self.cfg = cfg
        self.trackers = list(trackers)
        self._ses = lt.session(session_settings(cfg, user_agent))
        # libtorrent puts LAN and loopback peers in an unlimited "local" class; map every
        # address to the global class so configured caps hold on a LAN too.
        everyone = lt.ip_filter()
        everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        everyone.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
        self._ses.set_peer_class_filter(everyone)
        self._torrents: dict[str, Torrent] = {}
        self.counters = {"hash_failures": 0, "sent_payload_bytes": 0, "recv_payload_bytes": 0}
        # Payload after which a fresh session goes back to the usual tick (0: it never left it).
        self._ramp_bytes = ramp_bytes(cfg)
        self._stopped = False
        self._nodelay_seen: set[str] = set()
        self._shunned: set[str] = set()  # addresses in the session's IP filter (`shun`)
        self._rfd, self._wfd = os.pipe()
        for fd in (self._rfd, self._wfd):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._ses.set_alert_fd(self._wfd)
        self._greenlets = [gevent.spawn(self._alert_loop), gevent.spawn(self._tick_loop)]

    # The interface.
    def seed(self, meta: Metainfo, save_dir: Path, *, checked: bool = False) -> None:
        """Seeds a complete file `save_dir/<name>`. In libtorrent's seed mode, each piece
        is hashed from disk the first time a peer asks for it (a piece gone bad there takes
        the torrent out of seed mode); a file `checked` against `meta` just now (its pieces
        were hashed to build it) is taken as complete without that."""
        if meta.infohash_hex not in self._torrents:
            self._add(meta, save_dir, seed=True, checked=checked)

    def start(self, meta: Metainfo, save_dir: Path, priorities: list[int] | None = None,
              sequential: bool = False, peers: list[tuple[str, int]] = ()) -> None:
        """Starts downloading `save_dir/<name>` (no-op if the torrent is already here),
        with libtorrent piece `priorities` (1-7, one per piece) if given, or in piece order
        if `sequential` (until `set_priorities`). `peers` (the blob's seeding origins, say)
        are dialled without waiting for the tracker."""
        if meta.infohash_hex not in self._torrents:
            self._add(meta, save_dir, seed=False, priorities=priorities, sequential=sequential, peers=peers)

    def wait_pieces(self, infohash: str, known: int, *, stall_timeout: float, deadline: float,
                    timeout: float | None = None) -> list[int]:
        """Blocks this greenlet until more than `known` pieces have passed their hash check
        (or `timeout` s have passed); returns those pieces in the order they passed (the
        list grows as pieces arrive: what is new is from index `known` on). A wait for the
        last piece wakes at the torrent's end, not at each piece. Raises DownloadError on a
        libtorrent error, removal, `stall_timeout` s without new bytes, or at `deadline`."""
        t = self._get(infohash)
        until = None if timeout is None else time.monotonic() + timeout
        event = t.finished if known == t.meta.num_pieces - 1 else t.changed
        while len(t.arrived) <= known:
            self._check(t, stall_timeout, deadline)
            left = 0.5 if until is None else min(0.5, until - time.monotonic())
            if left <= 0:
                break
            event.wait(timeout=left)
        return t.arrived

    def wait_finished(self, infohash: str, *, stall_timeout: float, deadline: float) -> None:
        t = self._get(infohash)
        while not t.finished.is_set():
            self._check(t, stall_timeout, deadline)
            t.changed.wait(timeout=0.5)
        if t.error:
            raise DownloadError(t.error)

    def _check(self, t: Torrent, stall_timeout: float, deadline: float) -> None:
        if t.error:
            raise DownloadError(t.error)
        now = time.monotonic()
        if now - t.last_progress_at > stall_timeout:
            raise DownloadError(
                f"no progress for {stall_timeout:.0f}s ({t.progress.done}/{t.progress.total} bytes, "
                f"{t.progress.peers} peers)"
            )
        if now > deadline:
            raise DownloadError("download did not finish in time")

    def downloading_hosts(self, infohash: str) -> int:
        """Distinct addresses among the connected peers that are not seeds (a round trip
        to libtorrent's network thread: call it now and then, not per piece). A peer still
        connecting or handshaking is not counted: libtorrent cannot know yet whether it is
        a seed, and an origin counted then widened a wave of two agents to three stripes."""
        return len({p.ip[0] for p in self._settled_peers(infohash) if not p.flags & lt.peer_info.seed})

    def others_have(self, infohash: str, index: int, exclude: set[str]) -> bool:
        """Whether a connected peer at an address not in `exclude` has piece `index` (a
        round trip to libtorrent's network thread)."""
        return any(_has(p, index) for p in self._settled_peers(infohash, exclude))

    def held_elsewhere(self, infohash: str, exclude: set[str]) -> bool:
        """Whether every piece this torrent lacks is on a connected peer at an address not in
        `exclude` (a round trip to libtorrent's network thread)."""
        t = self._get(infohash)
        peers = self._settled_peers(infohash, exclude)
        return all(had or any(_has(p, i) for p in peers) for i, had in enumerate(t.have))

    def _settled_peers(self, infohash: str, exclude: set[str] = frozenset()) -> list:
        """The torrent's connected peers past their handshake (libtorrent's peer_info), but
        those at an address in `exclude`."""
        t = self._get(infohash)
        # In the pool, as it waits on the network thread (12 ms per call measured on a busy
        # agent); the binding lets go of the GIL meanwhile.
        peers = in_thread(t.handle.get_peer_info)
        return [p for p in peers
                if not p.flags & (lt.peer_info.connecting | lt.peer_info.handshake) and p.ip[0] not in exclude]

    def shun(self, infohash: str, hosts: set[str]) -> None:
        """Drops this torrent's peers at `hosts` (IP addresses; anything else is left out)
        and takes none from there until `readmit`: libtorrent's IP filter, applied to this
        torrent alone, so other torrents keep those peers. A host sharing such an address
        is dropped too."""
        t = self._get(infohash)
        hosts = {host for host in hosts if _is_ip(host)}
        if not hosts:
            return
        if not hosts <= self._shunned:
            self._shunned |= hosts
            f = lt.ip_filter()
            for host in self._shunned:
                f.add_rule(host, host, 1)  # 1: blocked
            self._ses.set_ip_filter(f)
        t.handle.set_flags(lt.torrent_flags.apply_ip_filter)

    def readmit(self, infohash: str, peers: list[tuple[str, int]]) -> None:
        """Ends `shun` for this torrent and dials `peers` (its shunned peers, dropped from
        libtorrent's peer list meanwhile) again."""
        t = self._get(infohash)
        t.handle.unset_flags(lt.torrent_flags.apply_ip_filter)
        for host, port in peers:
            if _is_ip(host):
                t.handle.connect_peer((host, port))

    def have(self, infohash: str) -> bytes:
        """Which pieces of a torrent have passed their hash check (one byte each, 1 if so)."""
        return bytes(self._get(infohash).have)

    def set_priorities(self, infohash: str, priorities: list[int]) -> None:
        """Replaces the piece priorities of a torrent (1-7, one per piece) and ends any
        sequential order (libtorrent's sequential mode ignores priorities below 7); pieces
        given a deadline by `prioritize` and not yet here keep the top priority, 7."""
        t = self._get(infohash)
        priorities = list(priorities)
        for index in t.urgent:
            if not t.have[index]:
                priorities[index] = 7
        t.handle.unset_flags(lt.torrent_flags.sequential_download)
        t.handle.prioritize_pieces(priorities)

    def prioritize(self, infohash: str, pieces: range, deadline_ms: int = 0) -> None:
        """Asks for these pieces first (time-critical), e.g. the head of a blob a client is
        waiting to stream. Only a few: ordered downloading costs the swarm diversity."""
        t = self._get(infohash)
        for i, index in enumerate(pieces):
            if not t.have[index]:
                t.urgent.add(index)
                t.handle.set_piece_deadline(index, deadline_ms + 10 * i)

    def download(self, meta: Metainfo, save_dir: Path, *, timeout: float, stall_timeout: float) -> None:
        """Blocks this greenlet until `save_dir/<name>` is complete and on disk."""
        self.start(meta, save_dir)
        t = self._get(meta.infohash_hex)
        self.wait_finished(meta.infohash_hex, stall_timeout=stall_timeout, deadline=time.monotonic() + timeout)
        # "Finished" means every piece passed its hash check, not that libtorrent's disk
        # threads have written them all; wait for that before anyone reads the file.
        t.flushed.clear()
        t.handle.flush_cache()
        if not t.flushed.wait(timeout=60):
            raise DownloadError("libtorrent did not flush the download to disk within 60s")

    def move(self, infohash: str, new_dir: Path, timeout: float = 60) -> None:
        """Moves a torrent's file to `new_dir` (a rename on one file system) and keeps
        seeding from there."""
        t = self._get(infohash)
        t.moved.clear()
        t.move_error = None
        t.handle.move_storage(str(new_dir))
        if not t.moved.wait(timeout=timeout):
            raise DownloadError(f"moving {infohash} to {new_dir} timed out")
        if t.move_error:
            raise DownloadError(f"moving {infohash} failed: {t.move_error}")

    def remove(self, infohash: str) -> bool:
        try:
            t = self._get(infohash)
        except NotFound:
            return False
        if self._torrents.get(infohash) is t:
            del self._torrents[infohash]
        with contextlib.suppress(RuntimeError):
            self._ses.remove_torrent(t.handle)
        t.error = t.error or "removed"
        t.finished.set()
        t.notify()
        return True

    def passed_first_time(self, infohash: str, index: int) -> bool:
        """Whether piece `index` passed libtorrent's hash check without ever failing it, as
        far as the alerts tell (False for a torrent not here): then the only bytes libtorrent
        wrote for it are the ones it verified."""
        t = self._torrents.get(infohash)
        return t is not None and not t.alerts_lost and index not in t.hash_failed

    def has(self, infohash: str) -> bool:
        return infohash in self._torrents

    def reannounce(self, infohash: str, min_interval: float = 10.0) -> bool:
        """Announces a torrent now (at most once per `min_interval` s), so a tracker that
        lost its peers (Redis restarted empty) hears of this one within a request instead
        of at the next regular announce."""
        t = self._torrents.get(infohash)
        if t is None or t.handle is None or time.monotonic() - t.reannounced_at < min_interval:
            return False
        t.reannounced_at = time.monotonic()
        # Past the tracker's min interval too: this is exactly the case it was not meant for.
        t.handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
        return True

    def progress(self, infohash: str) -> Progress:
        return self._get(infohash).progress

    def infohashes(self) -> list[str]:
        return list(self._torrents)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for g in self._greenlets:
            g.kill(block=False)
        self._ses.pause()
        del self._ses
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # Internals.
    def _get(self, infohash: str) -> Torrent:
        """The torrent, once libtorrent has it (waiting for `_add` if need be)."""
        t = self._torrents.get(infohash)
        if t is not None and t.handle is None:
            t.added.wait()
        if t is None or t.handle is None:
            raise NotFound(f"no torrent {infohash}")
        return t

    def _add(self, meta: Metainfo, save_dir: Path, *, seed: bool, checked: bool = False,
             priorities: list[int] | None = None, sequential: bool = False,
             peers: list[tuple[str, int]] = ()) -> Torrent:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(lt.bdecode(meta.torrent()))
        atp.save_path = str(save_dir)
        atp.trackers = self.trackers
        # Not auto-managed and not paused: auto-managed torrents start paused until the
        # next queue tick, which cost 0.5-1 s per torrent (LIBTORRENT-NOTES). Assigning
        # flags drops the defaults, so update_subscribe must be named: without it
        # post_torrent_updates() reports nothing and progress never moves.
        atp.flags = lt.torrent_flags.update_subscribe
        if seed and checked:
            # Resume data saying every piece is here: libtorrent checks the file's size,
            # not its content. (Seed mode hashed each 50 MiB layer again on every origin
            # that served it first: 20-30 % of an origin's CPU in a cold pull.)
            atp.have_pieces = [True] * meta.num_pieces
        elif seed:
            atp.flags |= lt.torrent_flags.seed_mode
        if seed and self.cfg.super_seeding:
            atp.flags |= lt.torrent_flags.super_seeding
        if priorities is not None:
            atp.piece_priorities = priorities
        if sequential:
            atp.flags |= lt.torrent_flags.sequential_download
        if not seed and not (save_dir / meta.name).exists():
            # Nothing on disk to check: libtorrent skips its check of the (absent) file, a
            # disk-thread round trip, and -- what matters -- wants peers from the start, so
            # the `peers` below are dialled as the torrent is added (its connect boost for
            # add_torrent_params.peers), not at the tracker's first answer.
            atp.flags |= lt.torrent_flags.no_verify_files
        if peers:
            # Also dialled at libtorrent's next tick or its tracker's first answer, so a
            # download reaches its seeds even while the tracker's announce is slow or failing.
            atp.peers = list(peers)
        t = Torrent(meta)
        if seed:
            t.finished.set()
            t.have[:] = b"\x01" * meta.num_pieces
            t.arrived = list(range(meta.num_pieces))
            t.progress = replace(t.progress, done=meta.length, state="seeding")
        # Known before libtorrent has it, so no alert about it goes unheard; `_get` waits
        # for the handle.
        self._torrents[meta.infohash_hex] = t
        try:
            # Posted to libtorrent's network thread, which adds the torrent -- and dials
            # `peers` -- at once, while this greenlet waits for the add_torrent_alert
            # (_dispatch). A blocking add_torrent waited 13-27 ms on the event loop of an
            # agent in a cold docker pull; run in the thread pool, the hand-offs there and
            # back cost a cold 1 MiB fetch about 0.9 ms (p50), half of it before the dial.
            self._ses.async_add_torrent(atp)
            while not t.added.wait(timeout=ADD_WAIT):
                if self._stopped:
                    raise RuntimeError(f"session stopped while adding {meta.infohash_hex}")
                # The alert may have been dropped (alerts_dropped_alert): ask directly.
                handle = self._ses.find_torrent(lt.sha1_hash(meta.infohash))
                if handle.is_valid():
                    t.handle = handle
                    break
            if t.handle is None:
                raise RuntimeError(f"libtorrent could not add {meta.infohash_hex}: {t.add_error}")
        except BaseException:
            if self._torrents.get(meta.infohash_hex) is t:
                del self._torrents[meta.infohash_hex]
            raise
        finally:
            t.added.set()
        return t

    def _alert_loop(self) -> None:
        # One watcher for the loop's life (gevent's select made watchers and a timer per
        # pass); should a wake-up byte ever be lost, the tick loop's nudge drains the alerts.
        watcher = gevent.get_hub().loop.io(self._rfd, 1)
        while not self._stopped:
            gevent.get_hub().wait(watcher)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._rfd, 4096):
                    pass
            try:
                alerts = self._ses.pop_alerts()
            except AttributeError:  # session deleted by stop()
                return
            new_sockets = False
            for alert in alerts:
                new_sockets = new_sockets or isinstance(alert, _NEW_SOCKETS)
                try:
                    self._dispatch(alert)
                except Exception:  # noqa: BLE001 - one bad alert must not end the loop
                    log.exception("handling %s", type(alert).__name__)
            if new_sockets and self.cfg.tcp_nodelay:
                set_nodelay(self._nodelay_seen)

    def _tick_loop(self) -> None:
        while not self._stopped:
            self._ses.post_torrent_updates()
            self._ses.post_session_stats()
            with contextlib.suppress(OSError):  # full (the alert loop is behind) or closed
                os.write(self._wfd, b"!")
            gevent.sleep(self.cfg.progress_interval)

    def _entry(self, alert) -> Torrent | None:
        try:
            return self._torrents.get(str(alert.handle.info_hashes().v1))
        except RuntimeError:  # the handle outlived its torrent
            return None

    def _dispatch(self, alert) -> None:
        if isinstance(alert, lt.add_torrent_alert):
            ti = alert.params.ti
            t = self._torrents.get(str(ti.info_hashes().v1)) if ti is not None else None
            if t is not None and not t.added.is_set():
                if alert.error.value():
                    t.add_error = alert.error.message()
                else:
                    t.handle = alert.handle
                t.added.set()
        elif isinstance(alert, lt.state_update_alert):
            now = time.monotonic()
            for st in alert.status:
                t = self._torrents.get(str(st.info_hashes.v1))
                if t is None:
                    continue
                if st.total_wanted_done > t.progress.done:
                    t.last_progress_at = now
                t.progress = Progress(
                    done=st.total_wanted_done,
                    total=st.total_wanted,
                    state="error" if t.error else ("seeding" if st.is_seeding else "downloading"),
                    peers=st.num_peers,
                    seeds=st.num_seeds,
                    download_rate=st.download_payload_rate,
                    upload_rate=st.upload_payload_rate,
                    uploaded=st.total_payload_upload,
                    downloaded=st.total_payload_download,
                )
        elif isinstance(alert, lt.session_stats_alert):
            values = alert.values
            self.counters["sent_payload_bytes"] = values.get("net.sent_payload_bytes", 0)
            self.counters["recv_payload_bytes"] = values.get("net.recv_payload_bytes", 0)
            moved = self.counters["sent_payload_bytes"] + self.counters["recv_payload_bytes"]
            if self._ramp_bytes and moved >= self._ramp_bytes:
                self._ramp_bytes = 0
                self._ses.apply_settings({"tick_interval": self.cfg.tick_ms})
                log.info("moved %d bytes under the rate cap: libtorrent ticks every %d ms now", moved, self.cfg.tick_ms)
        elif isinstance(alert, lt.torrent_finished_alert):
            t = self._entry(alert)
            if t is not None:
                t.last_progress_at = time.monotonic()
                t.progress = replace(t.progress, done=t.meta.length, state="seeding")
                t.arrived.extend(i for i, passed in enumerate(t.have) if not passed)
                t.have[:] = b"\x01" * t.meta.num_pieces
                t.finished.set()
                t.notify()
        elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            t = self._entry(alert)
            log.warning("torrent error: %s", alert.message())
            if t is not None:
                t.error = alert.message()
                t.finished.set()
                t.notify()
        elif isinstance(alert, lt.piece_finished_alert):
            t = self._entry(alert)
            if t is not None:
                if not t.have[alert.piece_index]:
                    t.have[alert.piece_index] = 1
                    t.arrived.append(alert.piece_index)
                t.last_progress_at = time.monotonic()
                t.notify()
        elif isinstance(alert, lt.cache_flushed_alert):
            t = self._entry(alert)
            if t is not None:
                t.flushed.set()
        elif isinstance(alert, lt.storage_moved_alert):
            t = self._entry(alert)
            if t is not None:
                t.moved.set()
        elif isinstance(alert, lt.storage_moved_failed_alert):
            t = self._entry(alert)
            if t is not None:
                t.move_error = alert.message()
                t.moved.set()
        elif isinstance(alert, lt.hash_failed_alert):
            # libtorrent requests the piece again and bans peers that keep sending bad
            # data; we count and log it, and stop taking that piece on libtorrent's word.
            self.counters["hash_failures"] += 1
            log.warning("hash failure: %s", alert.message())
            t = self._entry(alert)
            if t is not None:
                t.hash_failed.add(alert.piece_index)
        elif isinstance(alert, lt.alerts_dropped_alert):
            log.warning("libtorrent dropped alerts: %s", alert.message())
            for t in self._torrents.values():
                t.alerts_lost = True
        elif isinstance(alert, lt.listen_failed_alert):
            log.error("libtorrent cannot listen: %s", alert.message())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _has(peer, index: int) -> bool:
    """Whether a peer (libtorrent's peer_info) has piece `index`; one whose bitfield has not
    come yet has nothing."""
    return bool(peer.flags & lt.peer_info.seed or index < len(peer.pieces) and peer.pieces[index])
