"""Zero-copy file responses under gunicorn's gevent workers.

gunicorn sends a `wsgi.file_wrapper` body (what Flask's `send_file` returns) with
`socket.sendfile`, but gevent's socket implements that as a Python loop of 8 KiB reads and
sends. Measured here on a 200 MiB blob from an origin or an agent's cache: 0.22-0.30 s of the
server's CPU and 560-840 MiB/s. `install()` replaces it with `os.sendfile` on the socket's
non-blocking descriptor, waiting for the socket to drain between calls as gevent's own
send does: the kernel moves the bytes from the page cache to the socket without a copy
through Python.

A file whose bytes become servable over time (an agent streaming a blob while it
downloads, agent.streamfile) may define `ready(pos) -> end`, blocking this greenlet until
the bytes from `pos` may go out and returning where they end; `sendfile` sends up to there
and asks again. Sessions 11-19 sent such a stream as 4 MiB reads from Python instead: with
the checked prefix growing a piece at a time, an unlimited swarm had delivered less with
sendfile. With pieces checked in batches it delivers more, and costs less. Alternating runs,
N=20, S=256 MiB: limiter p50 0.899-0.909 against 0.816-0.908 (5 pairs; CPU floor 30.2-33.7
against 32.6-38.1 s); tc-shaped 0.798 and 0.805 against 0.787 and 0.776; no cap 223.8 and
220.2 MiB/s against 206.4 and 191.4.
"""

from __future__ import annotations

import os

from gevent import _socket3

from common.concurrency import in_thread

# Bytes a single os.sendfile call may send. Larger calls run in gevent's thread pool: a
# page that is not in memory would stall every greenlet while the disk reads it. Small
# bodies (manifests, configs) are sent from the loop, where a pool hand-off would cost
# more than the call, and so are growing files (`ready`): an agent's check read their bytes
# back from disk just before it let them go out, so they are in memory.
MAX_CALL = 8 << 20
IN_LOOP_BYTES = 64 << 10


def _send(sock_fd: int, file_fd: int, pos: int, n: int) -> int | OSError:
    """Bytes os.sendfile sent (0 when the socket's buffer is full, -1 at end of file), or
    the error, for the caller to raise: gevent's pool prints an exception raised in a
    thread as a crash, and a client hanging up mid-body is routine."""
    try:
        sent = os.sendfile(sock_fd, file_fd, pos, n)
    except BlockingIOError:
        return 0
    except OSError as exc:
        return exc
    return sent if sent else -1


def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
    """socket.sendfile for gevent sockets: `count` bytes of `file` from `offset` (to its end
    when None); returns the bytes sent and leaves the file's position after them, as
    socket.sendfile does."""
    file_fd = file.fileno()
    end = offset + count if count else os.fstat(file_fd).st_size
    ready = getattr(file, "ready", None)
    pos = offset
    try:
        while pos < end:
            limit = min(end, ready(pos)) if ready is not None else end
            n = min(limit - pos, MAX_CALL)
            if n <= IN_LOOP_BYTES or ready is not None:
                sent = _send(self.fileno(), file_fd, pos, n)
            else:
                sent = in_thread(_send, self.fileno(), file_fd, pos, n)
            if isinstance(sent, OSError):
                raise sent
            if sent < 0:
                raise EOFError(f"file ended at byte {pos} of {end}")
            if sent == 0:
                self._wait(self._write_event)  # honours the socket's timeout
            pos += sent
        return pos - offset
    finally:
        if pos > offset and hasattr(file, "seek"):
            file.seek(pos)


def install() -> None:
    """Makes gevent sockets send files with os.sendfile (in this process)."""
    _socket3.socket.sendfile = sendfile
