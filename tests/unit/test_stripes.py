"""agent.stripes: a wave's agents put disjoint stripes of pieces first."""

from agent.stripes import REST, TOP, stripe_priorities


def test_consecutive_slots_take_disjoint_stripes_that_cover_the_blob():
    pieces, wave = 103, 10
    first = 57  # a later wave: the torrent's count did not start at 0
    tops = [{i for i, p in enumerate(stripe_priorities(pieces, slot, wave)) if p == TOP}
            for slot in range(first, first + wave)]
    assert sum(len(t) for t in tops) == pieces
    assert set().union(*tops) == set(range(pieces))
    assert all(len(t) in (10, 11) for t in tops)


def test_every_piece_is_still_wanted():
    prios = stripe_priorities(64, 3, 8)
    # 7 stays free for the head pieces a waiting stream asks for (set_piece_deadline).
    assert set(prios) == {TOP, REST} and REST > 0 and TOP < 7
    assert [i for i, p in enumerate(prios) if p == TOP] == [3, 11, 19, 27, 35, 43, 51, 59]


def test_a_lone_downloader_has_no_preference():
    assert stripe_priorities(5, 0, 1) is None
    # A slot far beyond the blob's pieces (an old count) just yields a small stripe.
    assert stripe_priorities(4, 1000, 1001).count(TOP) == 0
