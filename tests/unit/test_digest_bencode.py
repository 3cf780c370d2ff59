import hashlib

import pytest

from common import bencode
from common.digest import Digest
from common.errors import InvalidDigest

HEX = hashlib.sha256(b"x").hexdigest()


def test_digest_accepts_prefixed_and_bare_hex():
    assert Digest.parse(f"sha256:{HEX}") == Digest.parse(HEX)
    assert str(Digest.parse(HEX)) == f"sha256:{HEX}"


@pytest.mark.parametrize("bad", [
    "", "sha256:", f"sha256:{HEX[:-1]}", f"sha256:{HEX.upper()}", f"md5:{HEX}", f"sha512:{HEX}",
    f"sha256:{HEX}0", "../../etc/passwd", f"sha256:{HEX[:-1]}/",
])
def test_malformed_digests_are_refused(bad):
    with pytest.raises(InvalidDigest):
        Digest.parse(bad)


def test_digest_of_file_matches_bytes(tmp_path):
    (tmp_path / "f").write_bytes(b"hello" * 1000)
    assert Digest.of_file(tmp_path / "f") == Digest.of_bytes(b"hello" * 1000)


def test_bencode_round_trip_and_sorted_keys():
    value = {b"z": 1, b"a": [b"x", 2, {b"k": b"v"}], b"m": -5}
    data = bencode.encode(value)
    assert data == b"d1:al1:xi2ed1:k1:vee1:mi-5e1:zi1ee"
    assert bencode.decode(data) == value


@pytest.mark.parametrize("bad", [b"", b"i12", b"5:abc", b"d1:ae", b"x", b"i1ei2e", b"l"])
def test_bencode_rejects_malformed(bad):
    with pytest.raises(bencode.BencodeError):
        bencode.decode(bad)
