"""Which pieces a downloader asks for first, so that agents starting together fetch
different pieces from the origin.

In a swarm that starts at once, only the origin has any piece, and the whole swarm advances
at the rate the origin sends pieces nobody has yet. libtorrent's rarest-first order cannot
see pieces that are on their way to another agent, so two agents often ask the origin for
the same one: measured, the origin sent 1.17-1.23 copies of a blob to 10 agents, and every
agent waited for those duplicates.

Each download therefore gets a slot from the tracker (0, 1, 2, ... per torrent, in the order
agents asked for the metainfo) and asks first for the pieces of its stripe, `index % stripes
== slot % stripes`. The number of stripes is the wave's size as this agent sees it: the
addresses among its connected peers that are still downloading, plus itself. Consecutive
slots differ modulo that number, so a wave's agents take disjoint stripes from the origin
and get the rest from each other. Everything else keeps libtorrent's rarest-first order.
This is only an order: every piece is still wanted, and an agent alone fetches all of them
in piece order by default (`download.sequential`).

A stripe is asked for front first, in five bands of falling priority: the origin then sends
the blob roughly from its start to its end, so the swarm's pieces and every agent's
verified in-order prefix (what its stream may send) grow from the front. With the stripe at
one priority, pieces came in random order, the prefix stayed short until the last ones
landed, and each client took the rest of the blob in one burst after the download:
1.5-2.6 s of a 22 s run (N=20, S=128 MiB, limiter), fraction 0.70-0.73 against 0.84-0.85.

The bands split the stripe's pieces still to come, and are split again each time the top
band has arrived (`Downloader._restripe`), so they narrow as the download goes on. With
five fixed bands the pieces of each fifth of the blob still came in random order: an
agent's checked prefix grew in steps of a fifth, stood at 80-94 % when the last piece
arrived, and the rest (15-50 MiB) was read back, hashed and sent to the client after it
(150-850 ms, N=20, S=256 MiB). With narrowing bands it stands at 96-99.7 % then, and the
sha256 matches 2-200 ms after the last piece.

Once its stripe is here, an agent leaves the origins to the agents still fetching theirs
(`Downloader._spare_origins`): otherwise it asked the origins for pieces still on their way
to their stripe's agent, and the origin sent them twice (650-800 duplicate blocks in the
last 3-4 s of a 20-agent, 256 MiB run; 1.05 copies in all, now 1.01-1.02).
"""

from __future__ import annotations

import collections

# libtorrent's piece priorities. 7 is left to the pieces a waiting stream needs first
# (set_piece_deadline gives them 7; were the stripe at 7 too, the head piece would wait for
# libtorrent's once-a-second time-critical pass: a lone agent's first byte came after 1.29 s
# instead of 0.3 s). 6 comes before 1 whatever the pieces' availability; 1 is the lowest
# that still downloads. Measured the same in the swarm as 7 and 1 (N=10, 64 MiB). A stripe
# takes the priorities from TOP down to REST + 1, one per band.
TOP = 6
REST = 1
BANDS = TOP - REST


def stripe_priorities(num_pieces: int, slot: int, stripes: int, have: bytes | None = None) -> list[int] | None:
    """Piece priorities for the downloader in `slot` of a wave of `stripes` downloaders;
    None (libtorrent's defaults) for a downloader alone. The bands split the stripe's pieces
    not yet had (`have`: one byte per piece, nonzero once had; none had without it) into
    BANDS runs of about equal length, front first."""
    if stripes <= 1:
        return None
    prios = [REST] * num_pieces
    todo = stripe_left(num_pieces, slot, stripes, have)
    for rank, index in enumerate(todo):
        prios[index] = TOP - rank * BANDS // len(todo)
    return prios


def stripe_left(num_pieces: int, slot: int, stripes: int, have: bytes | None = None) -> list[int]:
    """The pieces of the stripe of `slot` in a wave of `stripes` not in `have`, in order."""
    return [i for i in range(slot % stripes, num_pieces, stripes) if have is None or not have[i]]


class OriginSparing:
    """When a download of a wave leaves the origins (its stripe is here) and when it asks
    them again (Downloader._spare_origins): when no piece at all has come over the last
    `window` s (the agents it waits on are gone), or when pieces came at less than half the
    rate they came as it left the origins while some piece it lacks is on no other agent
    yet (a slow agent, whose stripe would reach everyone at its own download rate). Pieces
    that are on other agents and come slowly are a busy swarm, where the origin would only
    send them twice: on tc-shaped links 11 of 20 agents asked the origins again by the rate
    alone, and the origin sent 1.07-1.17 copies instead of 1.02-1.03."""

    def __init__(self, window: float):
        self.window = window
        self.samples: collections.deque[tuple[float, int]] = collections.deque()  # (when, pieces had)
        self.left_at: float | None = None  # when the origins were left
        self.rate = 0.0  # pieces per second over the window before that
        self.over = False  # readmitted: the origins stay
        self.looked = float("-inf")  # when the peers' pieces were last looked at (`may_look`)

    def note(self, now: float, got: int) -> None:
        self.samples.append((now, got))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def recent_rate(self, now: float) -> float:
        """Pieces per second over (about) the last window."""
        then, before = self.samples[0]
        return (self.samples[-1][1] - before) / max(now - then, 1e-3)

    def leave(self, now: float) -> None:
        # At least a piece a window: with no rate known yet, nothing at all for a whole
        # window still brings the origins back.
        self.left_at, self.rate = now, max(self.recent_rate(now), 2 / self.window)

    def stalled(self, now: float) -> bool:
        """No piece at all over the last window since the origins were left."""
        return now - self.left_at >= self.window and self.samples[-1][1] == self.samples[0][1]

    def may_look(self, now: float) -> bool:
        """Whether to look at the peers' pieces now: at most three times a window, as a
        busy swarm can stay slow for seconds (a round trip to libtorrent's network thread
        and a pass over every piece of every peer each time)."""
        if now - self.looked < self.window / 3:
            return False
        self.looked = now
        return True

    def slowed(self, now: float) -> bool:
        """Pieces over the last window at under half the rate before the origins were left."""
        return now - self.left_at >= self.window and self.recent_rate(now) * 2 < self.rate
