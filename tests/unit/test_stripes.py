"""agent.stripes: a wave's agents put disjoint stripes of pieces first, front first."""

from agent.stripes import BANDS, REST, TOP, stripe_priorities


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
    # Five bands over the blob, falling from TOP: the origin sends the front first.
    assert [p for _, p in mine] == [6, 6, 5, 4, 4, 3, 3, 2]
    assert BANDS == TOP - REST == 5
    assert all(a >= b for (_, a), (_, b) in zip(mine, mine[1:]))


def test_a_lone_downloader_has_no_preference():
    assert stripe_priorities(5, 0, 1) is None
    # A slot far beyond the blob's pieces (an old count) just yields a small stripe.
    assert all(p == REST for p in stripe_priorities(4, 1000, 1001))
