"""Test images made without any registry: a busybox-static root filesystem, imported into a
private dockerd (tests/integration/docker_env.py) and built on with random layers."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.integration.docker_env import Dockerd, require_binary

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "ls", "true", "sleep", "wc", "sha256sum", "env")


def busybox_rootfs_tar(message: str = "") -> bytes:
    """An uncompressed tar of a tiny root filesystem: bin/busybox, applet symlinks, /hello.txt."""
    path = require_binary(BUSYBOX, "busybox-static")
    with open(path, "rb") as f:
        head = f.read(4096)
    assert b"ld-linux" not in head, f"{path} is dynamically linked; install busybox-static"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        info = tar.gettarinfo(path, "bin/busybox")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with open(path, "rb") as f:
            tar.addfile(info, f)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            tar.addfile(link)
        if message:
            add_file(tar, "hello.txt", message.encode())
    return buf.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def import_base(dockerd: Dockerd, ref: str = "kraken-test/base:1") -> str:
    """`docker import` of the busybox root filesystem."""
    dockerd.run("import", "-", ref, input=busybox_rootfs_tar())
    return ref


@dataclass
class BuiltImage:
    ref: str
    message: str
    layer_sizes: list[int]


def build_image(dockerd: Dockerd, workdir: Path, ref: str, layer_sizes=(8 << 20, 64 << 10),
                message: str | None = None) -> BuiltImage:
    """A multi-layer image FROM the imported busybox base (imported if missing): one layer of
    random bytes per size, then /hello.txt with a unique message, which the image's CMD prints.
    Random content makes every build's layers new blobs (and incompressible)."""
    if dockerd.run("images", "-q", "kraken-test/base:1").stdout.strip() == "":
        import_base(dockerd)
    message = message or f"hello from kraken test {uuid.uuid4().hex}"
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=workdir))
    lines = ["FROM kraken-test/base:1"]
    for i, size in enumerate(layer_sizes):
        with open(ctx / f"data{i}", "wb") as f:
            left = size
            while left:
                chunk = min(left, 8 << 20)
                f.write(os.urandom(chunk))
                left -= chunk
        lines.append(f"COPY data{i} /data/{i}")
    (ctx / "hello.txt").write_text(message + "\n")
    lines += ["COPY hello.txt /hello.txt", 'CMD ["/bin/cat", "/hello.txt"]']
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    dockerd.run("build", "--network", "none", "-q", "-t", ref, str(ctx), timeout=600)
    shutil.rmtree(ctx, ignore_errors=True)
    return BuiltImage(ref, message, list(layer_sizes))
