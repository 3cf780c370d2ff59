"""Which pieces a downloader asks for first, so that agents starting together fetch
different pieces from the origin.

In a swarm that starts at once, only the origin has any piece, and the whole swarm advances
at the rate the origin sends pieces nobody has yet. libtorrent's rarest-first order cannot
see pieces that are on their way to another agent, so two agents often ask the origin for
the same one: measured, the origin sent 1.17-1.23 copies of a blob to 10 agents, and every
agent waited for those duplicates.

Each download therefore gets a slot from the tracker (0, 1, 2, ... per torrent, in the order
agents asked for the metainfo) and puts the pieces of its stripe, `index % stripes ==
slot % stripes`, at the top priority. The number of stripes is the wave's size as this
agent sees it: the addresses among its connected peers that are still downloading, plus
itself. Consecutive slots
differ modulo that number, so a wave's agents take disjoint stripes from the origin and get
the rest from each other. Everything else keeps libtorrent's rarest-first order. This is
only an order: every piece is still wanted, and an agent alone fetches all of them.
"""

from __future__ import annotations

# libtorrent's piece priorities: 7 is picked before anything else regardless of how many
# peers have the piece; 1 is the lowest that still downloads.
TOP = 7
REST = 1


def stripe_priorities(num_pieces: int, slot: int, stripes: int) -> list[int]:
    """Piece priorities for the downloader in `slot` of a wave of `stripes` downloaders."""
    if stripes <= 1:
        return [TOP] * num_pieces
    mine = slot % stripes
    return [TOP if index % stripes == mine else REST for index in range(num_pieces)]

