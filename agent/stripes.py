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
in libtorrent's own order.
"""

from __future__ import annotations

# libtorrent's piece priorities. 7 is left to the pieces a waiting stream needs first
# (set_piece_deadline gives them 7; were the stripe at 7 too, the head piece would wait for
# libtorrent's once-a-second time-critical pass: a lone agent's first byte came after 1.29 s
# instead of 0.3 s). 6 comes before 1 whatever the pieces' availability; 1 is the lowest
# that still downloads. Measured the same in the swarm as 7 and 1 (N=10, 64 MiB).
TOP = 6
REST = 1


def stripe_priorities(num_pieces: int, slot: int, stripes: int) -> list[int] | None:
    """Piece priorities for the downloader in `slot` of a wave of `stripes` downloaders;
    None (libtorrent's defaults) for a downloader alone."""
    if stripes <= 1:
        return None
    mine = slot % stripes
    return [TOP if index % stripes == mine else REST for index in range(num_pieces)]
