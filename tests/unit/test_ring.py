from collections import Counter

from common.digest import Digest
from common.ring import HashRing, HealthTracker

MEMBERS = [f"origin-{i}:80" for i in range(5)]


def digests(n):
    return [Digest.of_bytes(str(i).encode()) for i in range(n)]


def test_locations_are_deterministic_and_distinct():
    a, b = HashRing(MEMBERS, 3), HashRing(list(reversed(MEMBERS)), 3)
    for d in digests(50):
        assert a.locations(d) == b.locations(d)
        assert len(set(a.locations(d))) == 3


def test_load_spreads_over_members():
    ring = HashRing(MEMBERS, 1)
    counts = Counter(ring.locations(d)[0] for d in digests(5000))
    assert set(counts) == set(MEMBERS)
    assert min(counts.values()) > 5000 / 5 * 0.8


def test_removing_a_member_moves_only_its_blobs():
    full, smaller = HashRing(MEMBERS, 1), HashRing(MEMBERS[:-1], 1)
    for d in digests(1000):
        if full.locations(d)[0] != MEMBERS[-1]:
            assert smaller.locations(d)[0] == full.locations(d)[0]


def test_unhealthy_member_is_replaced_by_next_in_rank_until_cooldown_ends():
    now = [0.0]
    health = HealthTracker(fail_threshold=2, cooldown=10, clock=lambda: now[0])
    ring = HashRing(MEMBERS, 2, health)
    d = digests(1)[0]
    first, second, third = ring.ranked(d)[:3]
    health.failed(first)
    assert ring.locations(d) == [first, second]  # one failure is not enough
    health.failed(first)
    assert ring.locations(d) == [second, third]
    now[0] = 11
    assert ring.locations(d) == [first, second]


def test_all_unhealthy_still_gives_somewhere_to_try():
    health = HealthTracker(fail_threshold=1)
    ring = HashRing(MEMBERS[:2], 2, health)
    for m in MEMBERS[:2]:
        health.failed(m)
    assert len(ring.locations(digests(1)[0])) == 2


def test_replicas_capped_at_member_count():
    assert len(HashRing(MEMBERS[:2], 5).locations(digests(1)[0])) == 2


def test_active_health_check_takes_dead_members_out_and_brings_them_back():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from common.devcluster import free_port
    from common.ring import ActiveHealthCheck

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alive = f"127.0.0.1:{server.server_address[1]}"
    dead = f"127.0.0.1:{free_port()}"
    ring = HashRing([alive, dead], replicas=1, health=HealthTracker(fail_threshold=2, cooldown=3600))
    check = ActiveHealthCheck(ring.members, ring.health, timeout=1)
    try:
        assert check.check_once() == {alive: True, dead: False}
        check.check_once()
        # Dead twice: out of every answer, although nobody asked for a blob.
        assert all(ring.locations(Digest.of_bytes(bytes([i]))) == [alive] for i in range(20))
        # It comes back with its first good answer, long before the cooldown.
        revived = ThreadingHTTPServer(("127.0.0.1", int(dead.rsplit(":", 1)[1])), Health)
        threading.Thread(target=revived.serve_forever, daemon=True).start()
        try:
            assert check.check_once() == {alive: True, dead: True}
            assert ring.health.healthy(dead)
        finally:
            revived.shutdown()
    finally:
        server.shutdown()
