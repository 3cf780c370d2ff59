"""A local directory (or a mounted network file system): the default backend."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from common.backends import Backend, BackendError, NotFound, keys, register
from common.store import fsync

CHUNK = 1 << 20


@register("fs")
class FSBackend(Backend):
    def __init__(self, root: str):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"fs backend: cannot create {root}: {exc.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.root / keys.check(key)

    def stat(self, namespace: str, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{key} not in fs backend") from None
        except OSError as exc:
            raise BackendError(f"fs backend: {exc}") from None

    def upload(self, namespace: str, key: str, src: BinaryIO, size: int | None = None) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                    out.flush()
                    fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise BackendError(f"fs backend: cannot write {key}: {exc.strerror}") from None

    def download(self, namespace: str, key: str, dst: BinaryIO) -> int:
        try:
            with open(self._path(key), "rb") as f:
                n = 0
                while chunk := f.read(CHUNK):
                    dst.write(chunk)
                    n += len(chunk)
                return n
        except FileNotFoundError:
            raise NotFound(f"{key} not in fs backend") from None
        except OSError as exc:
            raise BackendError(f"fs backend: cannot read {key}: {exc.strerror}") from None

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the directory the prefix names, not the whole root.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        found = []
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                if name.startswith(".upload-"):
                    continue
                key = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    found.append(key)
        return iter(sorted(found))
