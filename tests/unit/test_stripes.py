"""agent.stripes: a wave's agents put disjoint stripes of pieces first, front first, in
bands that narrow as the stripe arrives."""

import contextlib
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import gevent
import pytest

from agent import downloader as downloader_module
from agent.downloader import Download, Downloader
from agent.stripes import BANDS, REST, TOP, OriginSparing, stripe_left, stripe_priorities
from common.digest import Digest


def test_consecutive_slots_take_disjoint_stripes_that_cover_the_blob():
    pieces, wave = 103, 10
    first = 57  # a later wave: the torrent's count did not start at 0
    stripes = [{i for i, p in enumerate(stripe_priorities(pieces, slot, wave)) if p > REST}
               for slot in range(first, first + wave)]
    assert sum(len(s) for s in stripes) == pieces
    assert set().union(*stripes) == set(range(pieces))
    assert all(len(s) in (10, 11) for s in stripes)


def test_every_piece_is_still_wanted_and_a_stripe_goes_front_first():
    prios = stripe_priorities(64, 3, 8)
    # 7 stays free for the head pieces a waiting stream asks for (set_piece_deadline).
    assert min(prios) == REST > 0 and max(prios) == TOP < 7
    mine = [(i, p) for i, p in enumerate(prios) if p > REST]
    assert [i for i, _ in mine] == [3, 11, 19, 27, 35, 43, 51, 59]
    # Five bands of about equal length, falling from TOP: the origin sends the front first.
    assert [p for _, p in mine] == [6, 6, 5, 5, 4, 3, 3, 2]
    assert BANDS == TOP - REST == 5
    assert all(a >= b for (_, a), (_, b) in zip(mine, mine[1:]))


def test_a_lone_downloader_has_no_preference():
    assert stripe_priorities(5, 0, 1) is None
    # A slot far beyond the blob's pieces (an old count) just yields a small stripe.
    assert all(p == REST for p in stripe_priorities(4, 1000, 1001))


def test_the_bands_split_only_what_is_left_of_the_stripe():
    have = bytearray(64)
    for index in (3, 11, 19, 1, 2):  # three of the stripe's pieces, two of others
        have[index] = 1
    prios = stripe_priorities(64, 3, 8, bytes(have))
    assert stripe_left(64, 3, 8, bytes(have)) == [27, 35, 43, 51, 59]
    assert [prios[i] for i in (27, 35, 43, 51, 59)] == [6, 5, 4, 3, 2]
    assert all(prios[i] == REST for i in range(64) if i not in (27, 35, 43, 51, 59))
    # The last piece left is the top band on its own.
    have = bytearray(b"\x01" * 64)
    have[59] = 0
    assert stripe_priorities(64, 3, 8, bytes(have))[59] == TOP


class _Session:
    """What Downloader._restripe asks of the torrent session: a wave of four, pieces that
    arrive when the test says, the priorities set, the origins shunned and readmitted."""

    def __init__(self, pieces: int):
        self.cfg = SimpleNamespace(progress_interval=0.001)
        self.pieces = bytearray(pieces)
        self.set: list[list[int]] = []
        self.calls: list[tuple] = []
        self.elsewhere = False  # whether the pieces it lacks are on other agents
        self.looks = 0  # calls to held_elsewhere

    def shun(self, infohash, hosts):
        self.calls.append(("shun", hosts))

    def readmit(self, infohash, peers):
        self.calls.append(("readmit", peers))

    def held_elsewhere(self, infohash, exclude):
        self.looks += 1
        return self.elsewhere

    def has(self, infohash):
        return True

    def downloading_hosts(self, infohash):
        return 3

    def have(self, infohash):
        return bytes(self.pieces)

    def set_priorities(self, infohash, priorities):
        self.set.append(list(priorities))

    def wait_pieces(self, infohash, known, *, stall_timeout, deadline, timeout=None):
        gevent.sleep(timeout)
        return [i for i, had in enumerate(self.pieces) if had]


@contextlib.contextmanager
def _restriping(session, slot: int, guess: int, seeds=(), every: float = 0.0):
    """Downloader._restripe running against `session` for a download in `slot` that
    guessed a wave of `guess`, a pass at most every `every` s (none between passes
    unless given); stopped, and checked to have ended, on leaving."""
    downloader = Downloader.__new__(Downloader)
    downloader.session = session
    dl = Download("ns", Digest("sha256:" + "0" * 64), Path("/nonexistent"), 0)
    dl.slot = slot
    dl.seeds = list(seeds)
    meta = SimpleNamespace(infohash_hex="00" * 20, num_pieces=len(session.pieces))
    with mock.patch.object(downloader_module, "RESTRIPE_EVERY", every):
        job = gevent.spawn(downloader._restripe, dl, meta, guess)
        try:
            yield dl
        finally:
            dl.verified.set(True)
            job.join(timeout=1)
    assert job.dead


def test_a_download_looks_at_its_pieces_at_most_once_a_pass_however_fast_they_come():
    session = _Session(400)
    looks = []
    have = session.have
    session.have = lambda infohash: looks.append(1) or have(infohash)
    with _restriping(session, slot=1, guess=4, every=0.05):
        start = time.monotonic()
        for index in range(1, 400, 4):  # a piece every 2 ms or so: 100 pieces
            session.pieces[index] = 1
            gevent.sleep(0.002)
        passes = (time.monotonic() - start) / 0.05
        assert 2 <= len(looks) <= min(passes + 2, 50)


def test_a_download_splits_its_bands_again_each_time_the_top_band_has_come():
    session = _Session(40)
    stripe = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]  # slot 1 of a wave of 4
    with _restriping(session, slot=1, guess=2) as dl:  # guessed a wave of 2 at first
        gevent.sleep(0.05)
        assert len(session.set) == 1 and dl.stripes == 4
        assert [session.set[0][i] for i in stripe] == [6, 6, 5, 5, 4, 4, 3, 3, 2, 2]
        session.pieces[1] = 1  # half the top band: nothing changes
        gevent.sleep(0.05)
        assert len(session.set) == 1
        session.pieces[5] = session.pieces[2] = 1  # the top band has come
        gevent.sleep(0.05)
        assert len(session.set) == 2
        left = stripe[2:]
        assert [session.set[1][i] for i in left] == [6, 6, 5, 5, 4, 3, 3, 2]
        for index in left[:6]:  # down to two pieces: each its own band
            session.pieces[index] = 1
        gevent.sleep(0.05)
        assert [session.set[-1][i] for i in left[6:]] == [6, 4]


class _HeadSession:
    """What Downloader._ask_first asks of the torrent session."""

    def __init__(self):
        self.others = False  # whether a peer other than the origins has the piece
        self.asked: list[tuple[int, ...]] = []
        self.looked_past: set[str] = set()

    def has(self, infohash):
        return True

    def others_have(self, infohash, index, exclude):
        self.looked_past = exclude
        return self.others

    def prioritize(self, infohash, pieces):
        self.asked.append(tuple(pieces))


@pytest.fixture
def clock(monkeypatch):
    """The downloader's clock, moved by the test alone (`_step`): time measured on the real
    clock took a pause of this process on a busy host for slow pieces (7.5 % of runs under
    a load of 20-40 for the test of leaving and readmitting the origins)."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(downloader_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    return clock


def _step(clock, seconds: float) -> None:
    """`seconds` pass on the downloader's clock; the greenlets run meanwhile (10 ms)."""
    clock.now += seconds
    gevent.sleep(0.01)


def _head(slot, stripes=0):
    session = _HeadSession()
    downloader = Downloader.__new__(Downloader)
    downloader.session = session
    dl = Download("ns", Digest("sha256:" + "0" * 64), Path("/nonexistent"), 0)
    dl.slot, dl.stripes, dl.seeds = slot, stripes, [("127.0.0.2", 6881)]
    meta = SimpleNamespace(infohash_hex="00" * 20, num_pieces=40)
    return session, dl, gevent.spawn(downloader._ask_first, dl, meta, range(0, 1))


def test_the_first_download_of_a_blob_asks_for_its_head_at_once():
    for slot in (None, 0):  # no stripes; the torrent's first download
        session, _, job = _head(slot)
        job.join(timeout=1)
        assert session.asked == [(0,)]


def test_a_download_that_joined_a_wave_asks_for_its_head_once_another_agent_has_it():
    session, _, job = _head(3, stripes=4)
    gevent.sleep(0.2)
    assert session.asked == [] and not job.dead
    assert session.looked_past == {"127.0.0.2"}  # the origins do not count
    session.others = True
    job.join(timeout=1)
    assert session.asked == [(0,)]


def test_a_download_that_joined_a_wave_asks_for_its_head_at_once_on_its_own_stripe():
    session, _, job = _head(4, stripes=4)
    job.join(timeout=1)
    assert session.asked == [(0,)]


def test_a_download_that_joined_a_wave_asks_for_its_head_anyway_after_the_hold(monkeypatch, clock):
    monkeypatch.setattr("agent.downloader.HEAD_HOLD", 0.2)
    session, _, job = _head(3, stripes=4)
    gevent.sleep(0)  # the job starts: its hold runs from now
    _step(clock, 0.1)
    assert session.asked == []
    _step(clock, 0.1)
    job.join(timeout=1)
    assert session.asked == [(0,)]


def test_a_head_nobody_waits_for_any_more_is_not_asked_for():
    session, dl, job = _head(3, stripes=4)
    dl.done.set(None)
    job.join(timeout=1)
    assert session.asked == []


def test_a_download_leaves_the_origins_once_its_stripe_is_here_and_asks_them_again_when_pieces_slow(monkeypatch, clock):
    monkeypatch.setattr(downloader_module, "ORIGIN_WINDOW", 0.2)
    session = _Session(200)
    stripe = list(range(1, 200, 4))  # slot 1 of a wave of 4
    others = iter(i for i in range(200) if i % 4 != 1)
    with _restriping(session, slot=1, guess=4, seeds=[("127.0.0.2", 6881), ("127.0.0.3", 6881)]) as dl:
        for index in stripe[:-1]:  # about 100 pieces a second
            session.pieces[index] = 1
            _step(clock, 0.01)
        assert session.calls == []  # a piece of the stripe still to come
        session.pieces[stripe[-1]] = 1
        _step(clock, 0.01)
        assert session.calls == [("shun", {"127.0.0.2", "127.0.0.3"})]
        for _ in range(40):  # the rest keeps coming from the other agents, as fast
            session.pieces[next(others)] = 1
            _step(clock, 0.01)
        assert len(session.calls) == 1
        session.elsewhere = True
        for _ in range(10):  # a fifth of that, but the pieces it lacks are on other agents: a busy swarm
            session.pieces[next(others)] = 1
            _step(clock, 0.05)
        assert len(session.calls) == 1
        assert 1 <= session.looks <= 9  # at most three looks a window (0.2 s), not one per piece
        session.elsewhere = False
        for _ in range(10):  # as slow, and some piece is on no other agent yet: a slow agent
            session.pieces[next(others)] = 1
            _step(clock, 0.05)
        assert session.calls[1:] == [("readmit", dl.seeds)]
        for _ in range(10):  # and the origins stay
            session.pieces[next(others)] = 1
            _step(clock, 0.05)
        assert len(session.calls) == 2


def test_origins_left_come_back_after_a_window_with_no_piece_even_with_no_rate_known():
    sparing = OriginSparing(window=1.0)
    sparing.note(10.0, 5)
    sparing.leave(10.0)  # the first look found the stripe here: no rate yet
    sparing.note(10.9, 5)
    assert not sparing.stalled(10.9)
    sparing.note(11.1, 5)
    assert sparing.stalled(11.1)
    # Pieces still coming, one every half window: neither a stall nor slower than before.
    sparing = OriginSparing(window=1.0)
    sparing.note(10.0, 5)
    sparing.leave(10.0)
    for step in range(1, 5):
        sparing.note(10.0 + step * 0.5, 5 + step)
        assert not sparing.stalled(10.0 + step * 0.5)
        assert not sparing.slowed(10.0 + step * 0.5)


def test_a_download_with_a_stalled_wave_asks_the_origins_again_even_if_its_peers_claim_the_pieces(monkeypatch, clock):
    monkeypatch.setattr(downloader_module, "ORIGIN_WINDOW", 0.2)
    session = _Session(40)
    session.elsewhere = True  # peers that have the pieces, and send nothing
    with _restriping(session, slot=1, guess=4, seeds=[("127.0.0.2", 6881)]) as dl:
        for index in range(1, 40, 4):
            session.pieces[index] = 1
            _step(clock, 0.01)
        _step(clock, 0.01)
        assert session.calls == [("shun", {"127.0.0.2"})]
        _step(clock, 0.4)
        assert session.calls[1:] == [("readmit", dl.seeds)]


def test_a_download_alone_keeps_the_origins():
    session = _Session(40)
    session.downloading_hosts = lambda infohash: 0
    with _restriping(session, slot=0, guess=1, seeds=[("127.0.0.2", 6881)]):
        for index in range(39):
            session.pieces[index] = 1
            gevent.sleep(0.002)
        gevent.sleep(0.05)
        assert session.calls == []
