"""common.sendfile on real gevent sockets and files."""

import os
import socket

import gevent
import gevent.socket
import pytest

from common import sendfile as sf

MiB = 1 << 20


def receiver(sock, into: bytearray, pause: float = 0.0):
    def run():
        while True:
            data = sock.recv(256 << 10)
            if not data:
                return
            into.extend(data)
            if pause:
                gevent.sleep(pause)
    return gevent.spawn(run)


def blob(tmp_path, size: int) -> tuple[bytes, object]:
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return data, open(path, "rb")


@pytest.mark.parametrize("size", [1000, 3 * MiB])  # sent from the loop / from the thread pool
def test_a_file_goes_out_whole_and_its_position_follows(tmp_path, size):
    data, f = blob(tmp_path, size)
    a, b = gevent.socket.socketpair()
    got = bytearray()
    r = receiver(b, got)
    with f:
        assert sf.sendfile(a, f) == size
        assert f.tell() == size
    a.close()
    r.join(timeout=10)
    assert bytes(got) == data


def test_a_span_of_a_file_waits_for_a_slow_reader(tmp_path):
    # Small socket buffers and a reader that naps: most calls find the buffer full.
    data, f = blob(tmp_path, 4 * MiB)
    a, b = gevent.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    got = bytearray()
    r = receiver(b, got, pause=0.001)
    with f:
        assert sf.sendfile(a, f, offset=1000, count=3 * MiB) == 3 * MiB
        assert f.tell() == 1000 + 3 * MiB
    a.close()
    r.join(timeout=30)
    assert bytes(got) == data[1000:1000 + 3 * MiB]


def test_a_file_shorter_than_asked_is_an_error(tmp_path):
    _, f = blob(tmp_path, 1000)
    a, b = gevent.socket.socketpair()
    got = bytearray()
    receiver(b, got)
    with f, pytest.raises(EOFError):
        sf.sendfile(a, f, count=2000)
    assert len(got) <= 1000


def test_install_replaces_gevents_8k_loop():
    from gevent import _socket3

    before = _socket3.socket.sendfile
    try:
        sf.install()
        assert _socket3.socket.sendfile is sf.sendfile
    finally:
        _socket3.socket.sendfile = before


def test_a_reader_hanging_up_is_an_error_for_the_sender_only(tmp_path, capsys):
    _, f = blob(tmp_path, 8 * MiB)
    a, b = gevent.socket.socketpair()
    b.close()
    with f, pytest.raises((BrokenPipeError, ConnectionResetError)):
        sf.sendfile(a, f)
    # Raised here, not printed as a crash by gevent's thread pool.
    assert "failed with" not in capsys.readouterr().err
