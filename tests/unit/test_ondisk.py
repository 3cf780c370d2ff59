"""agent.ondisk: pieces read back from a download's file, and the sha256 along them."""

import hashlib
import os

import pytest

from agent import ondisk as od
from agent.downloader import Download
from common.digest import Digest
from common.errors import DownloadError
from torrents import metainfo as mi


def make_blob(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, Digest.of_bytes(data), data


def test_pieces_are_checked_against_their_sha1(tmp_path):
    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    assert meta.piece_span(2) == (512 << 10, 88 << 10) and meta.piece_index((512 << 10) + 5) == 2
    with open(path, "rb") as f:
        assert od.read_piece(f, meta, 1) == data[256 << 10 : 512 << 10]
    path.write_bytes(data[:1000] + bytes([data[1000] ^ 0x55]) + data[1001:])
    with open(path, "rb") as f:
        assert od.read_piece(f, meta, 0) is None
        ondisk, h = bytearray(3), hashlib.sha256()
        assert od._check_pieces(f, meta, [0, 1, 2], set(), ondisk, 0, h) == ([1, 2], 0)
        assert ondisk == bytearray([0, 1, 1]) and h.digest() == hashlib.sha256().digest()


def test_pieces_that_continue_the_hash_go_into_it_from_the_same_read(tmp_path):
    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    with open(path, "rb") as f:
        ondisk, h = bytearray(3), hashlib.sha256()
        # Piece 2 arrives first: checked, but not hashed before pieces 0 and 1.
        assert od._check_pieces(f, meta, [2, 0], set(), ondisk, 0, h) == ([2, 0], 1)
        assert h.digest() == hashlib.sha256(data[:256 << 10]).digest()
        assert od._check_pieces(f, meta, [1], set(), ondisk, 1, h) == ([1], 2)
        assert ondisk == bytearray([1, 1, 1])
        assert h.digest() == hashlib.sha256(data[:512 << 10]).digest()


def test_a_piece_taken_for_landing_only_must_show_no_unwritten_bytes(tmp_path):
    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    p1 = 256 << 10  # piece 1 starts here

    def piece1(content: bytes, landed_only: bool):
        path.write_bytes(content)
        with open(path, "rb") as f:
            return od.read_piece(f, meta, 1, landed_only=landed_only)

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
        assert od.read_piece(f, zmeta, 1, landed_only=True) == zeros[p1:2 * p1]
        assert od.read_piece(f, meta, 1, landed_only=True) is None


def test_a_blob_that_does_not_add_up_is_checked_again_piece_by_piece(tmp_path):

    path, d, data = make_blob(tmp_path, (600 << 10))
    meta = mi.build(path, d)
    # Piece 1 reads back with one byte not yet right: with no zeros in it, it is taken for landed.
    path.write_bytes(data[:300 << 10] + bytes([data[300 << 10] ^ 0x55]) + data[(300 << 10) + 1:])
    dl = Download("ns", d, path, ticket=0)
    check = od.OnDiskCheck(dl, meta, landed_only=lambda i: True)
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
    dl = Download("ns", d, path, ticket=0)
    check = od.OnDiskCheck(dl, meta)
    with open(path, "rb") as f:
        check.advance(f, [0, 1, 2])
        check.sha256.update(b"x")
        assert check.result(f) != d
