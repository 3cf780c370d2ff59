"""Gets blobs onto this host: metainfo from a tracker, pieces from the swarm, the whole
file checked against its sha256 before it joins the cache. Concurrent requests for one blob
share one download, and may stream it while it arrives.

Every byte served, whether cached or streamed, has been checked on disk: the download reads
each piece back from the file as it arrives, makes sure it is there as libtorrent verified
it (see `agent.ondisk.read_piece`), and hashes the whole blob's sha256 along that prefix; a stream serves
a piece only once it and every piece before it have passed, and the last piece of a blob
only once the sha256 of the whole blob has matched. A client therefore never receives a
complete blob with the wrong content; a failed download cuts its stream short.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import gevent
import gevent.event

from agent.admission import Admission
from agent.config import DownloadConfig
from agent.ondisk import INLINE_BLOB_BYTES, OnDiskCheck, open_when_present
from agent.streamfile import StreamFile
from agent.stripes import BANDS, OriginSparing, stripe_left, stripe_priorities
from common.concurrency import Signal, in_thread
from common.digest import Digest
from common.errors import DownloadError, NotFound, Pending
from common.store import CAStore, fsync
from torrents.metainfo import Metainfo
from torrents.seeder import EMPTY, Seeder
from torrents.session import TorrentSession
from tracker.client import ForDownload, TrackerClient

log = logging.getLogger(__name__)

# Pieces at the head of a blob asked for first when a client is waiting to stream it: the
# first bytes arrive fast while the rest keeps the swarm's order. At first only the origin
# has them, so an agent of a wave that asked for them at once fetched them from it: one
# piece, not more (with 4, the origin sent 1.12-1.14 copies of a 64 MiB blob to 10 agents,
# with none 1.09); now such an agent waits for another agent to have them (HEAD_HOLD).
HEAD_PIECES = 1
# How long a download that joined a wave waits for another agent to have the head pieces
# before asking for them with a deadline anyway (Downloader._ask_first; at N=20 the first
# agent had piece 0 after 0.63-0.69 s), and how often it looks.
HEAD_HOLD = 2.0
HEAD_POLL = 0.05
# The window over which a download that left the origins to others watches its rate of
# pieces: below half its rate when it left them, it asks them again (agent.stripes.OriginSparing).
ORIGIN_WINDOW = 1.5
# Seconds before a piece that has not read back right yet is read again, doubling up to
# RETRY_MAX while it still has not: its write usually lands within a millisecond or two,
# and a cold small blob waited a flat 10 ms on its last piece that way (3-7 % of them).
RETRY_FIRST = 0.001
RETRY_MAX = 0.01
# A blob larger than INLINE_BLOB_BYTES has its pieces checked (read back, hashed) at most
# this often: each check is a hand-off to the thread pool and back, and checking every
# piece as it came (32 a second at 8 MiB/s) cost a swarm 3-5 % more CPU (bench-swarm's CPU
# floor, 10 and 20 agents). The checked prefix a stream sends moves up to this much later;
# the first piece to come, and the blob's last, are checked at once.
CHECK_EVERY = 0.2
# The least time between two passes of `Downloader._restripe` over a download's pieces and
# peers. It waited for each piece (32 a second at 8 MiB/s), and every wake-up of an agent's
# event loop costs more than its own work on a host whose cores are busy.
RESTRIPE_EVERY = 0.1


class DiskFull(DownloadError):
    """The cache's disk cannot hold a blob (HTTP 507 on the server port)."""


class Download:
    """One blob being fetched. `meta` resolves once the metainfo is known (or fails with
    NotFound), `verified` once the whole blob's sha256 has matched, `done` once the blob is
    in the cache; each fails with the download's error instead. `running` is set once the
    torrent is in the session (after any wait in the admission queue), or on failure."""

    def __init__(self, namespace: str, digest: Digest, partial: Path, ticket: int):
        self.namespace = namespace
        self.slot: int | None = None  # place in the torrent's wave, from the tracker (agent.stripes)
        self.seeds: list[tuple[str, int]] = []  # origins seeding it, from the tracker
        self.stripes = 0  # the wave's size as last set; 0 until peers show it
        self.sequential = False  # fetching pieces in order (alone so far)
        self.digest = digest
        self.partial = partial
        self.meta = gevent.event.AsyncResult()
        self.verified = gevent.event.AsyncResult()
        self.done = gevent.event.AsyncResult()
        self.running = gevent.event.Event()
        self.ticket = ticket
        self.started = time.monotonic()
        self.checked = 0  # leading pieces whose bytes on disk have matched their SHA-1
        self._checked_changed = Signal()
        self.marks: dict[str, float] = {}  # phase -> monotonic time, for the log

    def set_checked(self, pieces: int) -> None:
        self.checked = pieces
        self._checked_changed.notify()

    def wait_checked(self, index: int) -> None:
        """Blocks until piece `index` has passed the in-order check; raises the download's
        error if it fails first (stalls and timeouts included: the check waits on those)."""
        while self.checked <= index:
            if self.verified.ready():
                self.verified.get()  # raises the failure; success means every piece passed
                return
            self._checked_changed.wait(timeout=1.0)

    @property
    def origins(self) -> set[str]:
        """The addresses of the origins seeding the blob."""
        return {host for host, _ in self.seeds}

    @property
    def infohash(self) -> str | None:
        return self.meta.value.infohash_hex if self.meta.successful() else None


class Downloader:
    def __init__(
        self,
        store: CAStore,
        session: TorrentSession,
        seeder: Seeder,
        tracker: TrackerClient,
        cfg: DownloadConfig,
        metrics=None,
    ):
        self.store = store
        self.session = session
        self.seeder = seeder
        self.tracker = tracker
        self.cfg = cfg
        self._active: dict[Digest, Download] = {}
        self._metrics = metrics
        self.admission = Admission(cfg.max_active)

    def get(self, namespace: str, digest: Digest) -> Path | Download:
        """The cached blob's path, or the (new or shared) download in progress."""
        if self.store.exists(digest):
            # The access time for eviction; utime waits on the file system's journal while
            # another thread's fsync commits it, so off the event loop.
            in_thread(self.store.touch, digest)
            return self.store.path(digest)
        if digest == EMPTY:
            # A torrent cannot describe zero bytes, and nothing needs fetching.
            self.store.write_stream(digest, [])
            return self.store.path(digest)
        dl = self._active.get(digest)
        if dl is None:
            dl = Download(namespace, digest, self.store.download_dir / digest.hex, self.admission.ticket())
            self._active[digest] = dl
            gevent.spawn(self._run, dl)
        return dl

    def ensure(self, namespace: str, digest: Digest) -> Path:
        """Blocks until the blob is verified in the cache; returns its path."""
        got = self.get(namespace, digest)
        return got if isinstance(got, Path) else got.done.get()

    def status(self, digest: Digest) -> dict:
        if self.store.exists(digest):
            size = self.store.size(digest)
            return {"state": "cached", "done": size, "total": size}
        dl = self._active.get(digest)
        if dl is None:
            return {"state": "absent", "done": 0, "total": None}
        if dl.infohash and self.session.has(dl.infohash):
            p = self.session.progress(dl.infohash)
            return {"state": "downloading", "done": p.done, "total": p.total, "peers": p.peers,
                    "download_rate": p.download_rate, "slot": dl.slot, "stripes": dl.stripes,
                    "sequential": dl.sequential}
        if dl.meta.successful():
            return {"state": "queued", "done": 0, "total": dl.meta.value.length}
        return {"state": "pending", "done": 0, "total": None}

    def stream(self, dl: Download, start: int, end: int) -> StreamFile:
        """Bytes [start, end) of a download as a file that grows as its pieces pass the
        in-order check (agent.streamfile), once its first bytes may go out: the download's
        error, should it fail before then, reaches the caller before any response header."""
        meta: Metainfo = dl.meta.get()
        first, last = meta.piece_index(start), meta.piece_index(end - 1)
        dl.running.wait()  # queued behind other downloads until then
        if not dl.done.ready() and self.session.has(meta.infohash_hex):
            gevent.spawn(self._ask_first, dl, meta, range(first, min(first + HEAD_PIECES, last + 1)))
        return StreamFile(dl, meta, start, end).open(dl.partial, self.store.path(dl.digest))

    def _ask_first(self, dl: Download, meta: Metainfo, pieces: range) -> None:
        """Asks for the pieces a waiting stream needs first, with a deadline. A download
        that joined a wave (not the torrent's first: `slot` > 0) first waits up to
        HEAD_HOLD s for another agent to have them, or for them to be on its own stripe:
        until then only the origin has them, and every agent of a wave asking it for them
        cost it a copy each (N=20, S=256 MiB: 19 copies of piece 0, 1.9 % of all it sent,
        at the start of the run, when the origin's upload is what the swarm waits on)."""
        infohash = meta.infohash_hex
        if dl.slot:
            origins = dl.origins
            until = time.monotonic() + HEAD_HOLD
            while time.monotonic() < until:
                if dl.done.ready() or not self.session.has(infohash):
                    return
                if dl.stripes > 1 and pieces[0] % dl.stripes == dl.slot % dl.stripes:
                    break
                try:
                    if self.session.others_have(infohash, pieces[0], origins):
                        break
                except (RuntimeError, NotFound):  # the torrent went away meanwhile
                    return
                gevent.sleep(HEAD_POLL)
        if not dl.done.ready() and self.session.has(infohash):
            with contextlib.suppress(RuntimeError, NotFound):  # the torrent went away meanwhile
                self.session.prioritize(infohash, pieces)

    def _metainfo(self, namespace: str, digest: Digest) -> ForDownload:
        deadline = time.monotonic() + self.cfg.pending_timeout
        delay = 0.2
        while True:
            try:
                return self.tracker.metainfo_for_download(namespace, digest, slot=self.cfg.stripes)
            except Pending:
                if time.monotonic() > deadline:
                    raise DownloadError(f"blob {digest} still pending at the origins after "
                                        f"{self.cfg.pending_timeout:.0f}s") from None
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _run(self, dl: Download) -> None:
        digest = dl.digest
        try:
            try:
                meta, dl.slot, dl.seeds = self._metainfo(dl.namespace, digest)
                self._check_space(dl, meta)
            except BaseException as exc:
                dl.meta.set_exception(exc)
                raise
            dl.meta.set(meta)
            dl.marks["metainfo"] = time.monotonic()
            dl.done.set(self._fetch(dl, meta))
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            log.warning("download of %s failed: %s", digest, exc)
            if not dl.verified.ready():
                dl.verified.set_exception(exc)
            dl.set_checked(dl.checked)  # wakes the streams, which raise the error
            dl.done.set_exception(exc)
        finally:
            self.admission.forget(dl.ticket)
            dl.running.set()
            self._active.pop(digest, None)

    def _check_space(self, dl: Download, meta: Metainfo) -> None:
        """Refuses a download the cache's disk cannot hold, counting what the downloads in
        progress still need, before a byte is written or a response header sent: otherwise
        libtorrent fails with ENOSPC half way and a client streaming the blob only sees its
        body cut short."""
        free = self.store.free_bytes()
        needed = sum(_still_needed(other) for other in self._active.values() if other is not dl)
        if meta.length + needed > free:
            raise DiskFull(
                f"agent disk is full: blob {dl.digest} needs {meta.length} bytes, {free} bytes are free "
                f"in the cache ({needed} of them promised to downloads in progress)"
            )

    def _fetch(self, dl: Download, meta: Metainfo) -> Path:
        infohash = meta.infohash_hex
        ok = admitted = False
        f = striping = None
        try:
            # Joining the swarm while queued does not help: libtorrent in upload mode
            # (connected, requesting nothing) took 0.4-1 s to start once released, against
            # 30-90 ms for a torrent added then.
            admitted = self.admission.enter(dl.ticket, large=meta.length >= self.cfg.queue_min_bytes)
            if admitted:
                dl.marks["admitted"] = time.monotonic()
            priorities = None
            if dl.slot is not None and meta.num_pieces > 1:
                # Until its peers are known, the agent's slot is the best guess at the wave's size.
                guess = dl.slot + 1
                priorities = stripe_priorities(meta.num_pieces, dl.slot, guess)
                # Alone so far: in piece order, so a stream flows as pieces land (the
                # restriping below ends it once other downloaders show up).
                dl.sequential = priorities is None and self.cfg.sequential
                striping = gevent.spawn(self._restripe, dl, meta, guess)
            # A file left by an agent that stopped mid-download may hold other bytes than
            # libtorrent verifies now: then every piece is checked against its SHA-1.
            fresh = not dl.partial.exists()
            self.session.start(meta, self.store.download_dir, priorities, sequential=dl.sequential, peers=dl.seeds)
            # The clock starts once the download may run, not while it waited its turn.
            deadline = time.monotonic() + self.cfg.timeout
            dl.running.set()
            check = OnDiskCheck(dl, meta, lambda i: fresh and self.session.passed_first_time(infohash, i))
            known = 0  # pieces libtorrent has reported
            retry = 0.0  # s until pieces that did not read back right are read again
            checked_at = 0.0  # when pieces were last checked
            while not check.done:
                # A piece that did not read back right is likely still in libtorrent's write
                # buffer: look again shortly even if nothing new arrives.
                retry = min(max(retry * 2, RETRY_FIRST), RETRY_MAX) if check.misses else 0.0
                arrived = self.session.wait_pieces(infohash, known, stall_timeout=self.cfg.stall_timeout,
                                                   deadline=deadline, timeout=retry or None)
                gather = checked_at + CHECK_EVERY - time.monotonic()
                if known and not retry and gather > 0 and meta.length > INLINE_BLOB_BYTES:
                    # More pieces for the same check, unless the last one comes first.
                    arrived = self.session.wait_pieces(infohash, meta.num_pieces - 1,
                                                       stall_timeout=self.cfg.stall_timeout, deadline=deadline,
                                                       timeout=gather)
                checked_at = time.monotonic()
                new, known = arrived[known:], len(arrived)
                if f is None:
                    dl.marks["first piece"] = time.monotonic()
                    f = open_when_present(dl.partial)
                check.advance(f, new)
            actual = check.result(f)
            if actual != dl.digest:
                # Every piece matched its SHA-1, so the metainfo itself must be wrong.
                raise DownloadError(f"downloaded content is {actual}, not {dl.digest}: bad metainfo?")
            # Streams may release their last piece now; publishing is this host's business.
            dl.verified.set(True)
            dl.marks["verified"] = time.monotonic()
            if admitted:  # the next download need not wait for this one's fsync
                self.admission.leave()
                admitted = False
            fsync(f.fileno())
            self.seeder.remember(dl.digest, meta)
            # A rename into the cache; libtorrent keeps seeding from the new place.
            self.session.move(infohash, self.store.blob_dir(dl.digest))
            ok = True
        finally:
            if striping is not None:
                striping.kill(block=False)
            if admitted:
                self.admission.leave()
            if f is not None:
                f.close()
            if not ok:
                self.session.remove(infohash)
                dl.partial.unlink(missing_ok=True)
        elapsed = time.monotonic() - dl.started
        if self._metrics:
            self._metrics.observe(elapsed)
        phases = ", ".join(f"{k} {(v - dl.started) * 1e3:.1f}" for k, v in dl.marks.items())
        log.info("downloaded %s (%d bytes) in %.3fs (ms: %s)", dl.digest, meta.length, elapsed, phases)
        return self.store.path(dl.digest)

    def _restripe(self, dl: Download, meta: Metainfo, guess: int) -> None:
        """Sets the download's stripes to the wave's size once its peers show it (the
        `guess` until then), widening them as more downloaders appear; never narrowing,
        as agents that finish turn seeds. Splits the stripe's bands again over what is left
        of it each time its top band has come (agent.stripes). Looks at the peers every
        progress_interval; at the pieces at most every RESTRIPE_EVERY (`_spare_origins`)."""
        infohash = meta.infohash_hex
        stripes = 0
        left = 0  # the stripe's pieces still to come when its bands were last set
        origins = dl.origins
        sparing = OriginSparing(ORIGIN_WINDOW)
        known = 0  # pieces libtorrent has reported
        look = 0.0  # when to look at the peers next
        passed = 0.0  # when the last pass began
        while not dl.verified.ready() and self.session.has(infohash):
            gevent.sleep(max(0.0, passed + RESTRIPE_EVERY - time.monotonic()))
            passed = time.monotonic()
            try:
                have = self.session.have(infohash)
                if time.monotonic() >= look:
                    look = time.monotonic() + self.session.cfg.progress_interval
                    seen = self.session.downloading_hosts(infohash) + 1
                    if seen > 1 and seen > stripes:
                        if seen != guess or stripes:
                            self._set_stripes(dl, meta, seen, have)
                        stripes = dl.stripes = seen
                        left = len(stripe_left(meta.num_pieces, dl.slot, stripes, have))
                        log.debug("%s: slot %d of a wave of %d", dl.digest, dl.slot, stripes)
                    elif stripes > 1:
                        now_left = len(stripe_left(meta.num_pieces, dl.slot, stripes, have))
                        if now_left * BANDS <= left * (BANDS - 1):
                            # The top band has come: new bands split what is left of the stripe.
                            self._set_stripes(dl, meta, stripes, have)
                            left = now_left
                if stripes > 1 and origins and not sparing.over:
                    self._spare_origins(dl, meta, stripes, have, origins, sparing)
                known = len(self.session.wait_pieces(infohash, known, stall_timeout=math.inf, deadline=math.inf,
                                                     timeout=max(0.0, look - time.monotonic())))
            except (RuntimeError, NotFound, DownloadError):  # the torrent went away or failed meanwhile
                return

    def _spare_origins(self, dl: Download, meta: Metainfo, stripes: int, have: bytes, origins: set[str],
                       sparing: OriginSparing) -> None:
        """Once the download's own stripe is here, leaves the origins to the agents still
        fetching theirs: the rest of the blob comes from those agents as it reaches them.
        Otherwise an agent done with its stripe asked the origins for pieces still on their
        way to their stripe's agent, and the origin sent them twice. Asks the origins again
        when pieces stop, or slow while some piece is on no other agent (OriginSparing)."""
        now = time.monotonic()
        sparing.note(now, sum(have))
        if sparing.left_at is None:
            if not stripe_left(meta.num_pieces, dl.slot, stripes, have):
                sparing.leave(now)
                self.session.shun(meta.infohash_hex, origins)
        elif sparing.stalled(now) or (sparing.slowed(now) and sparing.may_look(now)
                                      and not self.session.held_elsewhere(meta.infohash_hex, origins)):
            log.info("%s: pieces came at %.1f/s without the origins, %.1f/s before: asking them again",
                     dl.digest, sparing.recent_rate(now), sparing.rate)
            sparing.over = True
            self.session.readmit(meta.infohash_hex, dl.seeds)

    def _set_stripes(self, dl: Download, meta: Metainfo, stripes: int, have: bytes) -> None:
        self.session.set_priorities(meta.infohash_hex, stripe_priorities(meta.num_pieces, dl.slot, stripes, have))
        dl.sequential = False


def _still_needed(dl: Download) -> int:
    """Bytes a download in progress has yet to write (its file is sparse until then)."""
    if not dl.meta.successful() or dl.verified.ready():
        return 0
    try:
        allocated = dl.partial.stat().st_blocks * 512
    except FileNotFoundError:
        allocated = 0
    return max(0, dl.meta.value.length - allocated)
