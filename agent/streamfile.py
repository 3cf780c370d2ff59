"""A download's bytes as a file that grows: what the agent streams to a client while the
blob arrives. gunicorn sends it with sendfile (common.sendfile), asking `ready` how far it
may go each time; a server without sendfile reads it instead. Either way only checked
bytes go out (agent.downloader)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agent.ondisk import open_when_present, run_for
from common.errors import DownloadError
from torrents.metainfo import Metainfo

if TYPE_CHECKING:
    from pathlib import Path

    from agent.downloader import Download

# Most bytes one read returns (when the server reads rather than sendfiles).
READ_CHUNK = 4 << 20


class StreamFile:
    """Bytes [start, end) of download `dl`. Every piece before the last may go out once it
    and every piece before it have passed the on-disk check; the last one only once the
    whole blob's sha256 has matched, so a client never holds a complete blob with the wrong
    content. A failed download raises its error from `ready` and `read`, which cuts the
    response short."""

    def __init__(self, dl: Download, meta: Metainfo, start: int, end: int):
        self.dl = dl
        self.meta = meta
        self.start = start
        self.end = end
        self._before_last = (meta.num_pieces - 1) * meta.piece_length
        self._fd: int | None = None

    def open(self, *paths: Path) -> StreamFile:
        """Waits until the first bytes may go out (raising the download's error should it
        fail first, before any response header), then opens the first of `paths` there is
        (agent.ondisk.open_when_present) at the range's start."""
        self.ready(self.start)
        f = open_when_present(*paths)
        # The descriptor follows the file when it moves into the cache.
        self._fd = os.dup(f.fileno())
        f.close()
        os.lseek(self._fd, self.start, os.SEEK_SET)
        return self

    def ready(self, pos: int) -> int:
        """Blocks until the byte at `pos` may go out; returns where the bytes that may go out
        from there end."""
        dl, meta = self.dl, self.meta
        index = pos // meta.piece_length
        last = meta.num_pieces - 1
        if index < last and not dl.verified.ready():
            dl.wait_checked(index)
        if dl.verified.ready() or index == last:
            dl.verified.get()  # raises if the download failed
            return self.end
        return min(self.end, dl.checked * meta.piece_length, self._before_last)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("stream file is not open")
        return self._fd

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fileno(), pos, whence)

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes from the position, once they may go out; b"" at the range's end."""
        pos = os.lseek(self.fileno(), 0, os.SEEK_CUR)
        if pos >= self.end:
            return b""
        limit = self.ready(pos)
        n = limit - pos if n is None or n < 0 else min(n, limit - pos)
        n = min(n, READ_CHUNK)
        data = run_for(self.meta, os.pread, self._fd, n, pos)
        if len(data) != n:
            raise DownloadError(f"{self.dl.digest} is short on disk at byte {pos}")
        os.lseek(self._fd, pos + n, os.SEEK_SET)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
