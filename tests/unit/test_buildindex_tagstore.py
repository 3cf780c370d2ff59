"""One contract, run against every TagStore: the in-memory fake and real Redis."""

import pytest

from buildindex.tagstore import MemoryTagStore, RedisTagStore
from common.digest import Digest

D1 = Digest.of_bytes(b"one")
D2 = Digest.of_bytes(b"two")


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryTagStore()
    return RedisTagStore(request.getfixturevalue("redis_client"))


def test_put_then_get_and_overwrite(store):
    assert store.get("library/busybox", "1") is None
    store.put("library/busybox", "1", D1)
    assert store.get("library/busybox", "1") == D1
    store.put("library/busybox", "1", D2)
    assert store.get("library/busybox", "1") == D2
    assert store.get("library/busybox", "2") is None
    assert store.get("library/busybo", "1") is None


def test_tags_listed_once_each_in_byte_order(store):
    for tag in ["b", "a", "C", "a", "10", "9"]:
        store.put("repo", tag, D1)
    page = store.list_tags("repo", offset=0, limit=10)
    assert page.items == ["10", "9", "C", "a", "b"] and not page.more
    assert store.list_tags("other", offset=0, limit=10).items == []


def test_tag_pages_by_offset_and_after_last(store):
    for i in range(7):
        store.put("repo", f"t{i}", D1)
    first = store.list_tags("repo", offset=0, limit=3)
    assert first.items == ["t0", "t1", "t2"] and first.more
    assert store.list_tags("repo", offset=3, limit=3).items == ["t3", "t4", "t5"]
    last = store.list_tags("repo", offset=6, limit=3)
    assert last.items == ["t6"] and not last.more
    exact = store.list_tags("repo", offset=4, limit=3)
    assert exact.items == ["t4", "t5", "t6"] and not exact.more
    assert store.list_tags("repo", offset=100, limit=3).items == []
    after = store.list_tags("repo", offset=0, limit=2, last="t2")
    assert after.items == ["t3", "t4"] and after.more
    assert store.list_tags("repo", offset=2, limit=5, last="t2").items == ["t5", "t6"]
    # `last` need not be a listed tag.
    assert store.list_tags("repo", offset=0, limit=5, last="t35").items == ["t4", "t5", "t6"]


def test_repositories_by_prefix(store):
    for repo in ["library/busybox", "library/alpine", "lib", "libx/y", "team/app", "library2"]:
        store.put(repo, "1", D1)
    store.put("library/alpine", "2", D2)
    assert store.list_repos("", offset=0, limit=100).items == [
        "lib", "library/alpine", "library/busybox", "library2", "libx/y", "team/app"]
    assert store.list_repos("library/", offset=0, limit=100).items == ["library/alpine", "library/busybox"]
    assert store.list_repos("library", offset=0, limit=100).items == [
        "library/alpine", "library/busybox", "library2"]
    assert store.list_repos("nothing", offset=0, limit=100).items == []
    page = store.list_repos("lib", offset=1, limit=2)
    assert page.items == ["library/alpine", "library/busybox"] and page.more
    assert store.list_repos("lib", offset=0, limit=10, last="library/busybox").items == ["library2", "libx/y"]
    # A `last` before the prefix does not widen the range.
    assert store.list_repos("team", offset=0, limit=10, last="a").items == ["team/app"]
    assert store.list_repos("lib", offset=0, limit=10, last="zzz").items == []


def test_ping(store):
    store.ping()
