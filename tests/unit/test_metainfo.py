import hashlib
import os

import pytest

from common import bencode
from common.digest import Digest
from torrents import metainfo as mi


def make_blob(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, Digest.of_bytes(data), data


@pytest.mark.parametrize("size,expected", [
    (1, 256 << 10), (256 << 20, 256 << 10), (512 << 20, 256 << 10), (513 << 20, 512 << 10),
    (4 << 30, 2 << 20), (100 << 30, 4 << 20),
])
def test_piece_length_grows_with_size_within_bounds(size, expected):
    assert mi.piece_length_for(size) == expected


def test_metainfo_is_deterministic_and_private(tmp_path):
    path, d, data = make_blob(tmp_path, (1 << 20) + 123)
    a, b = mi.build(path, d), mi.build(path, d)
    assert a.info == b.info and a.infohash == b.infohash
    info = bencode.decode(a.info)
    assert set(info) == {b"length", b"name", b"piece length", b"pieces", b"private"}
    assert info[b"private"] == 1 and info[b"name"] == d.hex.encode()
    assert a.num_pieces == 5
    assert info[b"pieces"][:20] == hashlib.sha1(data[: 256 << 10]).digest()


def test_announce_does_not_change_infohash(tmp_path):
    path, d, _ = make_blob(tmp_path, 1000)
    meta = mi.build(path, d)
    with_tracker = mi.Metainfo.from_torrent(meta.torrent(announce="http://t:1/announce"), expect=d)
    assert with_tracker.infohash == meta.infohash
    assert bencode.decode(meta.torrent(announce="http://t:1/announce"))[b"announce"] == b"http://t:1/announce"


def test_from_torrent_rejects_wrong_blob_and_garbage(tmp_path):
    path, d, _ = make_blob(tmp_path, 1000)
    torrent = mi.build(path, d).torrent()
    with pytest.raises(mi.MetainfoError):
        mi.Metainfo.from_torrent(torrent, expect=Digest.of_bytes(b"other"))
    with pytest.raises(mi.MetainfoError):
        mi.Metainfo.from_torrent(b"not a torrent")
    bad = bencode.encode({"info": {"name": d.hex, "length": 1000, "piece length": 16384, "pieces": b"x" * 40}})
    with pytest.raises(mi.MetainfoError):
        mi.Metainfo.from_torrent(bad)


def test_libtorrent_agrees_on_the_infohash(tmp_path):
    # The only test outside torrents/ that touches libtorrent: it checks our pure-Python
    # hashing against libtorrent's own parser.
    import libtorrent as lt

    path, d, _ = make_blob(tmp_path, 700_000)
    meta = mi.build(path, d)
    ti = lt.torrent_info(lt.bdecode(meta.torrent()))
    assert str(ti.info_hashes().v1) == meta.infohash_hex
    assert ti.priv() and ti.num_pieces() == meta.num_pieces


def test_empty_blob_has_no_torrent(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    with pytest.raises(mi.MetainfoError):
        mi.build(tmp_path / "e", Digest.of_bytes(b""))
