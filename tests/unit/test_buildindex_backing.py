"""Build-index with a real storage backend (a local directory): tags are written back
through the persisted queue and come back from the backend when Redis lost them."""

from __future__ import annotations

import time
from urllib.parse import quote

import gevent

from buildindex.app import create_app
from buildindex.backing import TagBacking
from buildindex.config import BuildIndexConfig
from buildindex.replication import Remotes, Replicator
from buildindex.tagstore import MemoryTagStore
from buildindex.tagtypes import DefaultTagType, TagTypes
from common.backends import keys
from common.digest import Digest
from common.sections import WriteBackConfig

D1, D2 = Digest.of_bytes(b"one"), Digest.of_bytes(b"two")


def make(tmp_path, store=None):
    rules = [{"namespace": "team/.*", "backend": "fs", "fs": {"root": str(tmp_path / "backend")}}]
    backing = TagBacking.open(rules, WriteBackConfig(), str(tmp_path / "state"))
    app = create_app(BuildIndexConfig(), tag_store=store or MemoryTagStore(),
                     tag_types=TagTypes([], DefaultTagType()), replicator=Replicator(Remotes({}), lambda *a: None),
                     backend=backing)
    return app, backing


def drain(backing, timeout: float = 10.0):
    """Works the queue until it is empty. The app's own write-back greenlet may be holding
    an item meanwhile (an upload yields to it while its fsync runs in the thread pool)."""
    deadline = time.monotonic() + timeout
    while backing.queue.pending():
        if not backing.queue.process_one():
            assert time.monotonic() < deadline, backing.queue.items()
            gevent.sleep(0.01)


def test_tags_are_written_back_and_survive_a_lost_redis(tmp_path):
    app, backing = make(tmp_path)
    c = app.test_client()
    assert c.put(f"/tags/{quote('team/app:1', safe='')}/digest/{D1}").status_code == 200
    assert c.put(f"/tags/{quote('team/app:2', safe='')}/digest/{D2}").status_code == 200
    # Not in a backed namespace: Redis only.
    assert c.put(f"/tags/{quote('other/app:1', safe='')}/digest/{D1}").status_code == 200
    assert backing.queue.pending() == 2
    drain(backing)
    assert (tmp_path / "backend" / keys.tag("team/app", "1")).read_text() == str(D1)
    app.kraken_shutdown()

    # A new build-index whose Redis is empty (and whose local disk is new).
    fresh, _ = make(tmp_path / "fresh-disk", store=MemoryTagStore())
    fresh.extensions["tag_backend"].manager = backing.manager
    c = fresh.test_client()
    assert c.get(f"/tags/{quote('team/app:1', safe='')}").get_data(as_text=True) == str(D1)
    listing = c.get("/repositories/team/app/tags").get_json()
    assert listing["result"] == ["1", "2"]
    assert c.get(f"/tags/{quote('other/app:1', safe='')}").status_code == 404
    fresh.kraken_shutdown()


def test_write_back_queue_outlives_the_process(tmp_path):
    app, backing = make(tmp_path)
    app.test_client().put(f"/tags/{quote('team/app:1', safe='')}/digest/{D1}")
    app.kraken_shutdown()
    # Restarted before the write-back ran: the item is still queued on disk.
    _, again = make(tmp_path)
    assert again.queue.pending() == 1
    drain(again)
    assert (tmp_path / "backend" / keys.tag("team/app", "1")).read_text() == str(D1)
