"""The agent's download queue: large blobs one (or `limit`) at a time, in the order asked for."""

import gevent

from agent.admission import Admission


def _run(adm: Admission, ticket: int, large: bool, order: list, hold_for: float = 0.05, delay: float = 0.0):
    gevent.sleep(delay)  # the metainfo round trip
    slot = adm.enter(ticket, large)
    order.append(ticket)
    gevent.sleep(hold_for)  # downloading
    if slot:
        adm.leave()


def test_large_downloads_run_one_at_a_time_in_request_order():
    adm = Admission(limit=1, hold=1.0)
    tickets = [adm.ticket() for _ in range(4)]
    order: list = []
    # Metainfo comes back in the opposite order to the requests.
    jobs = [gevent.spawn(_run, adm, t, True, order, delay=0.04 - 0.01 * i) for i, t in enumerate(tickets)]
    peak = 0

    def watch():
        nonlocal peak
        while not all(j.dead for j in jobs):
            peak = max(peak, adm.active)
            gevent.sleep(0.001)

    gevent.joinall([*jobs, gevent.spawn(watch)], timeout=5, raise_error=True)
    assert order == tickets
    assert peak == 1
    assert adm.active == 0


def test_small_blobs_never_wait():
    adm = Admission(limit=1)
    big, small = adm.ticket(), adm.ticket()
    order: list = []
    jobs = [gevent.spawn(_run, adm, big, True, order, hold_for=0.5), gevent.spawn(_run, adm, small, False, order)]
    gevent.sleep(0.1)
    assert order == [big, small]  # the small one went in while the big one held the slot
    gevent.joinall(jobs, timeout=5, raise_error=True)


def test_limit_zero_admits_everything_at_once():
    adm = Admission(limit=0)
    tickets = [adm.ticket() for _ in range(3)]
    order: list = []
    jobs = [gevent.spawn(_run, adm, t, True, order, hold_for=0.3) for t in tickets]
    gevent.sleep(0.1)
    assert sorted(order) == tickets
    gevent.joinall(jobs, timeout=5, raise_error=True)


def test_an_earlier_download_keeps_its_place_only_for_the_hold_time():
    adm = Admission(limit=1, hold=0.2)
    slow, fast = adm.ticket(), adm.ticket()
    order: list = []
    t0 = gevent.get_hub().loop.now()
    # `slow` never states its size (its metainfo is still pending): `fast` waits out the hold.
    job = gevent.spawn(_run, adm, fast, True, order)
    job.join(timeout=5)
    assert order == [fast]
    assert gevent.get_hub().loop.now() - t0 >= 0.15
    adm.forget(slow)


def test_a_failed_download_gives_up_its_place():
    adm = Admission(limit=1, hold=5.0)
    failed, nxt = adm.ticket(), adm.ticket()
    order: list = []
    job = gevent.spawn(_run, adm, nxt, True, order)
    gevent.sleep(0.05)
    assert order == []
    adm.forget(failed)  # no metainfo: it never enters
    job.join(timeout=1)
    assert order == [nxt]
