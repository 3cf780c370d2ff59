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


def test_pieces_are_checked_against_their_sha1(tmp_path):
    from agent import downloader

    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    assert meta.piece_span(2) == (512 << 10, 88 << 10) and meta.piece_index((512 << 10) + 5) == 2
    with open(path, "rb") as f:
        assert downloader.read_piece(f, meta, 1) == data[256 << 10 : 512 << 10]
    path.write_bytes(data[:1000] + b"X" + data[1001:])
    with open(path, "rb") as f:
        assert downloader.read_piece(f, meta, 0) is None
        ondisk, h = bytearray(3), hashlib.sha256()
        assert downloader._check_pieces(f, meta, [0, 1, 2], set(), ondisk, 0, h) == ([1, 2], 0)
        assert ondisk == bytearray([0, 1, 1]) and h.digest() == hashlib.sha256().digest()


def test_pieces_that_continue_the_hash_go_into_it_from_the_same_read(tmp_path):
    from agent import downloader

    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    with open(path, "rb") as f:
        ondisk, h = bytearray(3), hashlib.sha256()
        # Piece 2 arrives first: checked, but not hashed before pieces 0 and 1.
        assert downloader._check_pieces(f, meta, [2, 0], set(), ondisk, 0, h) == ([2, 0], 1)
        assert h.digest() == hashlib.sha256(data[:256 << 10]).digest()
        assert downloader._check_pieces(f, meta, [1], set(), ondisk, 1, h) == ([1], 2)
        assert ondisk == bytearray([1, 1, 1])
        assert h.digest() == hashlib.sha256(data[:512 << 10]).digest()


def test_a_piece_taken_for_landing_only_must_show_no_unwritten_bytes(tmp_path):
    from agent import downloader

    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    p1 = 256 << 10  # piece 1 starts here

    def piece1(content: bytes, landed_only: bool):
        path.write_bytes(content)
        with open(path, "rb") as f:
            return downloader.read_piece(f, meta, 1, landed_only=landed_only)

    # Not written yet (a hole reads as zeros), or being written (the tail of a page still
    # zero): not there, whatever libtorrent said.
    assert piece1(data[:p1] + bytes(p1) + data[2 * p1:], landed_only=True) is None
    torn = data[:p1 + 4096 - 100] + bytes(100) + data[p1 + 4096:]
    assert piece1(torn, landed_only=True) is None
    # Landed: taken as libtorrent verified it, without its SHA-1. (So a byte changed after
    # libtorrent's check is not caught here but by the sha256 of the whole blob.)
    changed = data[:p1 + 5] + bytes([data[p1 + 5] ^ 0x55]) + data[p1 + 6:]
    assert piece1(changed, landed_only=True) == changed[p1:2 * p1]
    assert piece1(changed, landed_only=False) is None
    # Real data may hold a run of zeros: such a piece is checked against its SHA-1.
    zeros = data[:p1 + 1000] + bytes(1000) + data[p1 + 2000:]
    path.write_bytes(zeros)
    zmeta = mi.build(path, Digest.of_bytes(zeros))
    with open(path, "rb") as f:
        assert downloader.read_piece(f, zmeta, 1, landed_only=True) == zeros[p1:2 * p1]
        assert downloader.read_piece(f, meta, 1, landed_only=True) is None


def test_a_blob_that_does_not_add_up_is_checked_again_piece_by_piece(tmp_path):
    from agent import downloader
    from common.errors import DownloadError

    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    # Piece 1 reads back with one byte not yet right: with no zeros in it, it is taken for landed.
    path.write_bytes(data[:300 << 10] + bytes([data[300 << 10] ^ 0x55]) + data[(300 << 10) + 1:])
    dl = downloader.Download("ns", d, path, ticket=0)
    check = downloader.OnDiskCheck(dl, meta, landed_only=lambda i: True)
    with open(path, "rb") as f:
        check.advance(f, [0, 1, 2])
        assert check.done and dl.checked == 3
        # The sha256 does not match, so every piece is checked against its SHA-1.
        with pytest.raises(DownloadError, match="piece 1 on disk does not match its hash"):
            check.result(f)
        # Once the write has landed, the file is whole after all.
        with open(path, "r+b") as w:
            w.seek(300 << 10)
            w.write(data[300 << 10:(300 << 10) + 1])
        assert check.result(f) == d
    # Pieces checked against their SHA-1 all along: a mismatch is not checked again.
    dl = downloader.Download("ns", d, path, ticket=0)
    check = downloader.OnDiskCheck(dl, meta)
    with open(path, "rb") as f:
        check.advance(f, [0, 1, 2])
        check.sha256.update(b"x")
        assert check.result(f) != d
