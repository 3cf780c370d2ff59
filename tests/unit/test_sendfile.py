"""common.sendfile on real gevent sockets and files, and agent.streamfile's growing file."""

import os
import socket
import time

import gevent
import gevent.event
import gevent.socket
import pytest

from agent.downloader import Download
from agent.streamfile import StreamFile
from common import sendfile as sf
from common.digest import Digest
from common.errors import DownloadError
from torrents import metainfo as mi

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


def until(predicate, timeout: float = 5.0) -> None:
    """Lets other greenlets run until `predicate()` holds (a busy host may take a while)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)


class Growing:
    """A file whose bytes may go out in steps, as an agent's stream file."""

    def __init__(self, f, first: int):
        self.f = f
        self.limit = first
        self.more = gevent.event.Event()

    def fileno(self):
        return self.f.fileno()

    def seek(self, pos):
        return self.f.seek(pos)

    def ready(self, pos):
        if pos >= self.limit:
            self.more.wait()
            self.limit = os.fstat(self.f.fileno()).st_size
        return self.limit


def test_a_growing_file_goes_out_only_as_far_as_it_is_ready(tmp_path):
    data, f = blob(tmp_path, 2 * MiB)
    g = Growing(f, MiB)
    a, b = gevent.socket.socketpair()
    got = bytearray()
    r = receiver(b, got)
    sender = gevent.spawn(sf.sendfile, a, g)
    until(lambda: len(got) >= MiB)
    gevent.sleep(0.1)  # and no further
    assert bytes(got) == data[:MiB] and not sender.ready()
    g.more.set()
    assert sender.get(timeout=10) == 2 * MiB
    a.close()
    r.join(timeout=10)
    assert bytes(got) == data
    f.close()


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


# agent.streamfile: what may go out of a download in progress.

def download(tmp_path, size=(600 << 10)):
    data = os.urandom(size)
    path = tmp_path / "partial"
    path.write_bytes(data)
    d = Digest.of_bytes(data)
    meta = mi.build(path, d)  # 3 pieces of 256 KiB, the last one short
    dl = Download("ns", d, path, 0)
    dl.meta.set(meta)
    return data, dl, meta, path


def test_stream_file_serves_checked_pieces_and_the_last_only_once_verified(tmp_path):
    data, dl, meta, path = download(tmp_path)
    pl = meta.piece_length
    s = StreamFile(dl, meta, 100, len(data))
    opened = gevent.spawn(s.open, path)
    gevent.sleep(0.05)
    assert not opened.ready()  # nothing checked yet: no header may go out
    dl.set_checked(1)
    opened.get(timeout=5)
    assert s.ready(100) == pl
    dl.set_checked(3)  # every piece checked, the sha256 not yet matched
    assert s.ready(pl) == 2 * pl
    last = gevent.spawn(s.ready, 2 * pl)
    gevent.sleep(0.05)
    assert not last.ready()
    dl.verified.set(True)
    assert last.get(timeout=5) == len(data)
    # Read rather than sendfiled: the same bytes, from the range's start.
    out = bytearray()
    while chunk := s.read(200 << 10):
        out.extend(chunk)
    assert bytes(out) == data[100:]
    s.close()


def test_stream_file_goes_out_with_sendfile_as_pieces_pass(tmp_path):
    data, dl, meta, path = download(tmp_path)
    pl = meta.piece_length
    dl.set_checked(1)
    s = StreamFile(dl, meta, 0, len(data)).open(path)
    a, b = gevent.socket.socketpair()
    got = bytearray()
    r = receiver(b, got)
    sender = gevent.spawn(sf.sendfile, a, s, 0, len(data))
    until(lambda: len(got) >= pl)
    gevent.sleep(0.1)  # and no further
    assert bytes(got) == data[:pl] and not sender.ready()
    dl.set_checked(3)
    until(lambda: len(got) >= 2 * pl)
    gevent.sleep(0.1)
    assert bytes(got) == data[:2 * pl] and not sender.ready()  # the last piece waits for the sha256
    dl.verified.set(True)
    dl.set_checked(3)
    assert sender.get(timeout=10) == len(data)
    a.close()
    r.join(timeout=10)
    assert bytes(got) == data
    s.close()


def test_stream_file_raises_the_downloads_error(tmp_path):
    data, dl, meta, path = download(tmp_path)
    s = StreamFile(dl, meta, 0, len(data))
    dl.set_checked(1)
    s.open(path)
    waiting = gevent.spawn(s.ready, meta.piece_length)
    gevent.sleep(0.05)
    dl.verified.set_exception(DownloadError("swarm gone"))
    dl.set_checked(dl.checked)
    with pytest.raises(DownloadError, match="swarm gone"):
        waiting.get(timeout=5)
    s.close()
