"""Emulated hosts for the benchmarks: every host in its own network namespace with a veth
link to a bridge, shaped by `tc tbf` to a rate in each direction, like a NIC.

    hub namespace: bridge br0 (10.203.0.1/16), redis and the tracker
    one namespace per origin and per agent: eth0 (10.203.x.y/16), shaped to R both ways

Every address lives inside namespaces this module creates, and nothing is routed out of
them: the root namespace gets no address in 10.203/16. Threads reach a namespace with
setns(2) (`enter`), which switches only the calling thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
PREFIX = "kp"
SUBNET = "10.203"
HUB_IP = f"{SUBNET}.0.1"

_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    subprocess.run(cmd, check=True, capture_output=True, text=True)


# The namespace this process started in, to come back to.
ORIGINAL = f"/proc/{os.getpid()}/ns/net"
_original_fd = os.open(ORIGINAL, os.O_RDONLY)


def enter(ns: str | None) -> None:
    """Moves the calling thread into network namespace `ns` (None: back to the original)."""
    fd = _original_fd if ns is None else os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        if fd != _original_fd:
            os.close(fd)


@dataclass
class Network:
    """A hub and shaped hosts. `rate_bytes` 0 means unshaped links."""

    rate_bytes: int
    hosts: dict[str, str] = field(default_factory=dict)  # namespace -> address
    tag: str = field(default_factory=lambda: str(os.getpid() % 10000))

    @property
    def hub(self) -> str:
        return f"{PREFIX}{self.tag}-hub"

    def create_hub(self) -> None:
        _ip("ip", "netns", "add", self.hub)
        _ip("ip", "link", "set", "lo", "up", ns=self.hub)
        _ip("ip", "link", "add", "br0", "type", "bridge", ns=self.hub)
        _ip("ip", "addr", "add", f"{HUB_IP}/16", "dev", "br0", ns=self.hub)
        _ip("ip", "link", "set", "br0", "up", ns=self.hub)

    def add_host(self, name: str, index: int) -> str:
        """A namespace `name` with address 10.203.<index/250+1>.<index%250+2>; returns it."""
        ns = f"{PREFIX}{self.tag}-{name}"
        addr = f"{SUBNET}.{index // 250 + 1}.{index % 250 + 2}"
        outer, inner = f"{PREFIX}{self.tag}x{index}", f"{PREFIX}{self.tag}y{index}"
        _ip("ip", "netns", "add", ns)
        _ip("ip", "link", "set", "lo", "up", ns=ns)
        _ip("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("ip", "link", "set", inner, "netns", ns)
        _ip("ip", "link", "set", outer, "netns", self.hub)
        _ip("ip", "link", "set", outer, "master", "br0", "up", ns=self.hub)
        _ip("ip", "addr", "add", f"{addr}/16", "dev", inner, ns=ns)
        _ip("ip", "link", "set", inner, "up", ns=ns)
        if self.rate_bytes:
            # Upload: the host's own interface. Download: the bridge port towards it.
            for dev, where in ((inner, ns), (outer, self.hub)):
                _ip("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{self.rate_bytes * 8}bit",
                    "burst", str(max(64 << 10, self.rate_bytes // 50)), "latency", "100ms", ns=where)
        self.hosts[ns] = addr
        return ns

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def destroy(self) -> None:
        for ns in list(self.hosts) + [self.hub]:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("ip", "netns", "del", ns)
        self.hosts.clear()


@contextlib.contextmanager
def shaped(rate_bytes: int):
    """A Network with its hub up and the calling thread in the hub (where a benchmark talks
    to its cluster from) for the block; then the thread goes back to its own namespace and
    every namespace is deleted, however the block ends."""
    network = Network(rate_bytes)
    try:
        network.create_hub()
        enter(network.hub)
        yield network
    finally:
        enter(None)
        network.destroy()


class NetnsHosts:
    """devcluster host placement: redis and trackers in the hub, each origin and agent in
    a shaped namespace of its own. Fresh namespaces have every port free, so ports are
    simply counted."""

    def __init__(self, network: Network):
        self.network = network
        self.namespaces: dict[tuple[str, int], str] = {}
        self._next_port = 7000

    def place(self, kind: str, index: int) -> tuple[str, list[str]]:
        if kind in ("redis", "tracker"):
            return HUB_IP, self.network.exec_prefix(self.network.hub)
        key = (kind, index)
        if key not in self.namespaces:
            offset = 0 if kind == "origin" else 50
            self.namespaces[key] = self.network.add_host(f"{kind}{index}", offset + index)
        ns = self.namespaces[key]
        return self.network.hosts[ns], self.network.exec_prefix(ns)

    def namespace(self, kind: str, index: int) -> str:
        return self.namespaces[(kind, index)]

    def port(self, host: str) -> int:
        self._next_port += 1
        return self._next_port
